"""Benchmarks, run from a checkout as `python -m benchmarks.NAME` after
`pip install .`.

Run that way, the checkout's directory comes first on sys.path, and its
sqlwasm/ (whose native extension a plain `pip install .` builds into
site-packages, not into the checkout) would shadow the installed package.
So sqlwasm is imported here, before any benchmark imports it, with the
checkout left off the path: the installed package is what gets measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _is_checkout(entry: str) -> bool:
    return Path(entry or ".").resolve() == CHECKOUT


def import_installed_sqlwasm() -> None:
    """Imports the installed sqlwasm (an editable install is the checkout
    itself, which is fine: its native extension is built in place)."""
    saved = sys.path[:]
    sys.path[:] = [entry for entry in saved if not _is_checkout(entry)]
    try:
        import sqlwasm  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "sqlwasm":
            raise
        raise SystemExit(
            "benchmarks: sqlwasm is not installed in this Python; run `pip install .` in the checkout first"
        ) from exc
    finally:
        sys.path[:] = saved


import_installed_sqlwasm()
