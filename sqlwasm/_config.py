"""The config file, sqlwasm.toml: what every entry point (the CLI, the
sqlite-utils and Datasette plugins) loads into a connection.

    trusted_keys = ["keys/publisher.pub"]       # .pub files or their text
    modules = ["geo", "modules/"]               # .wasm files, directories, shipped examples by name
    allow_unsigned = false
    db_modules = true                           # also the modules stored in each database
    grant = { sql = ["edges"], log = true }     # or a list: ["log"]
    cache_dir = "cache"                         # false: no disk cache
    [limits]
    timeout_ms = 1000

Relative paths are relative to the file's directory.
"""

from __future__ import annotations

import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from . import _cache
from ._errors import CapabilityError, Error, SignatureError
from ._limits import limit_problem
from ._runtime import Module, Runtime, parse_grant
from ._signing import PUBLIC_KEY_TAG, PublicKey, load_public_key

ENV_VAR = "SQLWASM_CONFIG"
FILE_NAME = "sqlwasm.toml"
LIMITS = ("timeout_ms", "fuel", "memory_pages", "max_result_bytes")
# (key, what is wrong) -> the error naming the source and the key
Problem = Callable[[str, str], "ConfigError"]
KEYS = ("trusted_keys", "modules", "allow_unsigned", "db_modules", "grant", "limits", "cache_dir")


class ConfigError(Error):
    """A config file (or Datasette's plugin configuration) that cannot be
    used; the message names the file and the key."""


@dataclass(frozen=True)
class ModuleRef:
    """One module the config names: a .wasm file, or a shipped example (trusted
    with the examples' key, as the CLI's `--load geo`)."""

    path: Path
    example: bool


@dataclass(eq=False)
class Config:
    """A parsed config. ``install`` loads its modules through one Runtime
    (per config, per process), so each module is verified and compiled once."""

    source: str  # the file, or where the settings came from: named in every error
    trusted_keys: tuple[PublicKey, ...] = ()
    modules: tuple[ModuleRef, ...] = ()
    allow_unsigned: bool = False
    db_modules: bool = False  # also install the modules stored in the connection's database
    grant: dict[str, bool | list[str]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    cache_dir: _cache.CacheDir = _cache.USER_CACHE
    _loaded: list[tuple[Module, Runtime]] | None = field(default=None, repr=False)
    _runtime: Runtime | None = field(default=None, repr=False)  # the one for trusted_keys
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def runtime_options(self) -> dict[str, Any]:
        """Runtime's keyword arguments but the trust ones."""
        return {"grant": self.grant, **self.limits, "cache_dir": self.cache_dir}

    def load(self) -> list[Module]:
        """Verifies and compiles the modules (once; later calls return them)."""
        return [module for module, _ in self._load()]

    def _load(self) -> list[tuple[Module, Runtime]]:
        with self._lock:
            if self._loaded is None:
                options = self.runtime_options()
                runtime = Runtime(trusted_keys=self.trusted_keys, allow_unsigned=self.allow_unsigned, **options)
                examples: Runtime | None = None
                loaded = []
                for ref in self.modules:
                    if ref.example:
                        from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY

                        examples = examples or Runtime(trusted_keys=EXAMPLES_PUBLIC_KEY, **options)
                        loaded.append((examples.load(ref.path), examples))
                    else:
                        loaded.append((runtime.load(ref.path), runtime))
                self._runtime = runtime
                self._loaded = loaded
            return self._loaded

    def install(self, conn: Any) -> list[Module]:
        """Installs every module into an apsw.Connection or sqlite3.Connection
        (with db_modules, also those stored in its database, verified against
        trusted_keys: the database chooses no trust). Every module is loaded
        before any is installed."""
        loaded = list(self._load())
        if self.db_modules:
            assert self._runtime is not None
            loaded += [(module, self._runtime) for module in self._runtime.load_stored(conn)]
        for module, runtime in loaded:
            runtime.install(conn, module)
        return [module for module, _ in loaded]


def find_config(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file: ``path``, else $SQLWASM_CONFIG, else ./sqlwasm.toml
    if there is one, else None."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path(FILE_NAME)
    return local if local.is_file() else None


# One Config per file version: a process that opens many connections reads,
# verifies and compiles once.
_configs: dict[tuple[Path, int, int], Config] = {}
_configs_lock = threading.Lock()


def load_config(path: str | os.PathLike[str] | None = None) -> Config | None:
    """The config found as find_config says, parsed; None if there is none.
    The same file (unchanged) gives the same Config object."""
    found = find_config(path)
    if found is None:
        return None
    try:
        resolved = found.resolve()
        stat = resolved.stat()
        key = (resolved, stat.st_mtime_ns, stat.st_size)
        with _configs_lock:
            if key in _configs:
                return _configs[key]
        data = resolved.read_bytes()
    except OSError as exc:
        how = "" if path is not None else f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
        raise ConfigError(f"cannot read config file {found}{how}: {exc.strerror}") from exc
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {found}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {found}: not valid TOML: {exc}") from exc
    config = config_from_mapping(table, source=f"config file {found}", base_dir=resolved.parent)
    with _configs_lock:
        return _configs.setdefault(key, config)


def config_from_mapping(data: Mapping[str, Any], *, source: str, base_dir: Path) -> Config:
    """A Config from parsed settings (a TOML file's, or Datasette's plugin
    configuration); relative paths are relative to base_dir."""

    def problem(key: str, text: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {text}")

    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a table of settings, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise problem(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
    config = Config(source=source)

    def strings(key: str) -> list[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise problem(key, f"must be a list of non-empty strings, got {value!r}")
        return value

    keys = []
    for i, text in enumerate(strings("trusted_keys")):
        key = text if text.startswith(PUBLIC_KEY_TAG + " ") else str(base_dir / text)
        try:
            keys.append(load_public_key(key))
        except SignatureError as exc:
            raise problem(f"trusted_keys[{i}]", str(exc)) from exc
    config.trusted_keys = tuple(keys)

    specs = strings("modules")
    config.modules = tuple(
        ref for i, spec in enumerate(specs) for ref in _module_refs(spec, base_dir, f"modules[{i}]", problem)
    )

    for name in ("allow_unsigned", "db_modules"):
        value = data.get(name, False)
        if not isinstance(value, bool):
            raise problem(name, f"must be true or false, got {value!r}")
        setattr(config, name, value)

    config.grant = _grant(data.get("grant", []), problem)

    limits = data.get("limits", {})
    if not isinstance(limits, Mapping):
        raise problem("limits", f"must be a table of {', '.join(LIMITS)}, got {limits!r}")
    for name, value in limits.items():
        if name not in LIMITS:
            raise problem(f"limits.{name}", f"unknown limit (known: {', '.join(LIMITS)})")
        wrong = limit_problem(value, name)
        if wrong is not None:
            raise problem(f"limits.{name}", wrong)
    config.limits = dict(limits)

    cache_dir = data.get("cache_dir", None)
    if cache_dir is False:
        config.cache_dir = None
    elif isinstance(cache_dir, str) and cache_dir:
        config.cache_dir = base_dir / cache_dir
    elif cache_dir is not None:
        raise problem("cache_dir", f"must be a directory (a string) or false for no disk cache, got {cache_dir!r}")
    return config


def _module_refs(spec: str, base_dir: Path, key: str, problem: Problem) -> list[ModuleRef]:
    """A file, every .wasm in a directory (in name order), or a shipped example's name."""
    path = base_dir / spec
    if path.is_dir():
        found = sorted(path.glob("*.wasm"))
        if not found:
            raise problem(key, f"no .wasm modules in directory {path}")
        return [ModuleRef(p, example=False) for p in found]
    if path.is_file():
        return [ModuleRef(path, example=False)]
    from sqlwasm.extensions import module_path

    if "/" not in spec and os.sep not in spec and not spec.endswith(".wasm") and module_path(spec).is_file():
        return [ModuleRef(module_path(spec), example=True)]
    raise problem(key, f"no module {spec}: no file {path}, nor the name of a shipped example")


def _grant(value: Any, problem: Problem) -> dict[str, bool | list[str]]:
    """["log", "sql"] or {log = true, sql = ["t"]}, as a mapping Runtime takes."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        grant: dict[str, bool | list[str]] = {name: True for name in value}
    elif isinstance(value, Mapping):
        grant = dict(value)
    else:
        raise problem("grant", f"must be a list of capabilities or a table such as {{sql = [\"t\"]}}, got {value!r}")
    try:
        parse_grant(grant)
    except CapabilityError as exc:
        raise problem("grant", str(exc)) from exc
    return grant
