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
RESULTS = HERE / "results"


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of `repeats` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def measure_interleaved(
    conn: Any, queries: dict[str, tuple[str, int, Any]], repeats: int, *, once: set[str] = frozenset()
) -> dict[str, float]:
    """ns/row of each query (label -> (sql, rows, expected first cell)) on
    conn (APSW's or the stdlib's), best of `repeats`, the queries
    interleaved so that machine noise hits them alike; those in `once` run
    a single time. A wrong answer stops the run."""
    ns_per_row = {label: float("inf") for label in queries}
    for repeat in range(repeats):
        for label, (sql, rows, expected) in queries.items():
            if repeat and label in once:
                continue
            seconds, result = best_of(1, lambda: conn.execute(sql).fetchall())
            if result[0][0] != expected:
                raise SystemExit(f"{label}: wrong answer {result[0][0]} != {expected}")
            ns_per_row[label] = min(ns_per_row[label], seconds / rows * 1e9)
    return ns_per_row


def print_against(ns_per_row: dict[str, float], baseline: str) -> dict[str, float]:
    """Prints ns/row and the ratio to the baseline; returns the ratios."""
    base = ns_per_row[baseline]
    width = max(map(len, ns_per_row)) + 2
    print(f"  {'variant':{width}} {'ns/row':>10} {'x ' + baseline:>{len(baseline) + 4}}")
    for label, ns in ns_per_row.items():
        print(f"  {label:{width}} {ns:10.1f} {ns / base:{len(baseline) + 4}.2f}")
    return {f"{label} / {baseline}": ns / base for label, ns in ns_per_row.items()}


def print_checks(checks: dict[str, bool]) -> None:
    for name, ok in checks.items():
        print(f"  [{'met' if ok else 'MISSED'}] {name}")


def signed_guest(source: Path, manifest: Path, workdir: Path) -> tuple[bytes, Path]:
    """Builds a guest and signs it with a fresh key: the real loading path."""
    key, pub = generate_keypair("bench", workdir)
    return build(source, manifest, key=key), pub


def load_baseline_udf(conn: apsw.Connection, workdir: Path) -> None:
    """Compiles benchmarks/baseline_udf.c and loads it: the native C UDF baseline."""
    so = workdir / "baseline_udf.so"
    if not so.exists():
        subprocess.run(
            ["cc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", str(HERE / "baseline_udf.c"),
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
