"""Shared benchmark plumbing: timing, guest builds, baselines, JSON output."""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import apsw

import sqlwasm
from sqlwasm._build import build
from sqlwasm._signing import generate_keypair

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of `repeats` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def signed_guest(source: Path, manifest: Path, workdir: Path) -> tuple[bytes, Path]:
    """Builds a guest and signs it with a fresh key: the real loading path."""
    key, pub = generate_keypair("bench", workdir)
    return build(source, manifest, key=key), pub


def load_baseline_udf(conn: apsw.Connection, workdir: Path) -> None:
    """Compiles native/baseline_udf.c and loads it: the native C UDF baseline."""
    so = workdir / "baseline_udf.so"
    if not so.exists():
        subprocess.run(
            ["cc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", str(ROOT / "native" / "baseline_udf.c"),
             "-o", str(so)],
            check=True,
        )
    conn.enable_load_extension(True)
    conn.load_extension(str(so), "sqlite3_baseline_init")
    conn.enable_load_extension(False)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    results = {
        "benchmark": name,
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "sqlwasm": sqlwasm.__version__,
        **results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="sqlwasm-bench-")
