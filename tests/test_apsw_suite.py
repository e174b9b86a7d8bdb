"""APSW's own test suite, with the shipped modules installed on every
connection it opens (tests/apsw_suite_with_modules.py): installing sqlwasm
must not change the outcome of any APSW behaviour. Its heavy threading test
(testIssue31: threads sharing connections with close, GC, backups, sessions
and blobs) hung or crashed the process before stores were tied to SQLite's
own lifetime. Runs in a child process (~2 minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "apsw_suite_with_modules.py"


def test_apsw_suite_passes_with_modules_installed_on_every_connection(tmp_path: Path) -> None:
    env = dict(os.environ, APSW_HEAVY_DURATION="8")
    # cwd: APSW's tests write their database files there
    done = subprocess.run([sys.executable, str(RUNNER)], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    summary = done.stderr.strip().splitlines()[-3:]
    assert done.returncode == 0, (done.returncode, done.stderr[-6000:])
    assert summary[-1].startswith("OK"), summary
