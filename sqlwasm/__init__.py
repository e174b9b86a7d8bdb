"""sqlwasm: signed, sandboxed WebAssembly functions for SQLite (APSW or Python's sqlite3).

    import sqlwasm
    conn = sqlwasm.connect("places.db", ["geo.wasm"], trusted_keys=["publisher.pub"])
    conn.execute("SELECT geo_haversine(lat, lon, 51.5, -0.12) FROM places")
"""

from ._config import ConfigError, load_config
from ._errors import (
    CapabilityError,
    Error,
    ManifestError,
    MarshallingError,
    ModuleFileNotFoundError,
    SignatureError,
    TrapError,
)
from ._manifest import FunctionSpec, Manifest
from ._runtime import Module, Runtime, connect, install
from ._signing import PublicKey

__version__ = "0.1.0"

__all__ = [
    "CapabilityError",
    "ConfigError",
    "Error",
    "FunctionSpec",
    "Manifest",
    "ManifestError",
    "MarshallingError",
    "Module",
    "ModuleFileNotFoundError",
    "PublicKey",
    "Runtime",
    "SignatureError",
    "TrapError",
    "connect",
    "install",
    "load_config",
]
