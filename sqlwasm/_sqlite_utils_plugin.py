"""The sqlite-utils plugin: every connection sqlite-utils opens (its CLI, and
sqlite_utils.Database) gets the modules of the config file that
$SQLWASM_CONFIG names (else ./sqlwasm.toml). Without a config it does nothing."""

from __future__ import annotations

import sqlite3

from sqlite_utils import hookimpl

from ._config import load_config


@hookimpl
def prepare_connection(conn: sqlite3.Connection) -> None:
    config = load_config()
    if config is not None:
        config.install(conn)
