"""The sqlite-utils plugin: every connection sqlite-utils opens (its CLI, and
sqlite_utils.Database) gets the modules of the config file that
$SQLWASM_CONFIG names (else ./sqlwasm.toml). Without a config it does nothing."""

from __future__ import annotations

import sqlite3

import click
from sqlite_utils import hookimpl

from ._config import load_config
from ._errors import Error


@hookimpl
def prepare_connection(conn: sqlite3.Connection) -> None:
    try:
        config = load_config()
        if config is not None:
            config.install(conn)
    except Error as exc:
        if click.get_current_context(silent=True) is None:
            raise  # the Python API: the sqlwasm error itself
        # The sqlite-utils command: its one-line "Error: ..." and status 1, not a traceback.
        raise click.ClickException(str(exc)) from exc
