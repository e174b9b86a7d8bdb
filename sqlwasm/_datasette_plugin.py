"""The Datasette plugin: every connection Datasette opens gets the modules
its configuration names, under `plugins: sqlwasm:` (the config file's keys;
per database under `databases: NAME: plugins: sqlwasm:`), else those of the
config file $SQLWASM_CONFIG names (else ./sqlwasm.toml), else none.

Relative paths in Datasette's configuration are relative to its
configuration directory (`datasette DIR/`), else to the current directory."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import click
from datasette import hookimpl

from ._config import Config, ConfigError, config_from_mapping, load_config
from ._errors import Error

# One Config per distinct settings: each module is verified and compiled
# once per process, however many connections Datasette opens.
_configs: dict[tuple[str, str], Config] = {}
_lock = threading.Lock()


def _config(datasette: Any, database: str | None) -> Config | None:
    settings = datasette.plugin_config("sqlwasm", database=database)
    if settings is None:
        return load_config()
    base_dir = Path(datasette.config_dir) if getattr(datasette, "config_dir", None) else Path.cwd()
    try:
        key = (json.dumps(settings, sort_keys=True), str(base_dir))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Datasette plugins.sqlwasm: not plain settings: {exc}") from exc
    with _lock:
        config = _configs.get(key)
        if config is None:
            config = _configs[key] = config_from_mapping(
                settings, source="Datasette's plugins.sqlwasm configuration", base_dir=base_dir
            )
    return config


@hookimpl  # type: ignore[untyped-decorator]
def startup(datasette: Any) -> None:
    """Loads (verifies, compiles) the configured modules as the server starts:
    a bad configuration stops it there, with the reason, rather than
    failing every request."""
    try:
        config = _config(datasette, None)
        if config is not None:
            config.load()
    except Error as exc:
        if click.get_current_context(silent=True) is None:
            raise  # Datasette used from Python: the sqlwasm error itself
        # `datasette serve`: its one-line "Error: ..." and status 1, not a traceback.
        raise click.ClickException(str(exc)) from exc


@hookimpl  # type: ignore[untyped-decorator]
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    config = _config(datasette, database)
    if config is not None:
        config.install(conn)
