"""The `sqlwasm` command line: one module per group of commands; main.py
holds the parser and the exit statuses."""

from .main import main, parser

__all__ = ["main", "parser"]
