"""Coverage-guided fuzzing (atheris) of the parsers that read untrusted bytes:
the wasm section reader, the manifest parser, the signature checker and the
native msgpack result decoder. tests/fuzz/ has the harnesses and their
oracles; docs/security.md ("Fuzzing") what they ran and found.

Each harness runs in a subprocess for SQLWASM_FUZZ_SECONDS (default 25) from
its committed seed corpus; a crash, an unexpected exception, a failed oracle
or a hung input fails the test. A longer run is
`python tests/fuzz/run.py TARGET --seconds 3600`.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from fuzz.run import TARGETS, FuzzRun, fuzz, run_target

SECONDS = int(os.environ.get("SQLWASM_FUZZ_SECONDS", "25"))
FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"


def failure_report(result: FuzzRun) -> str:
    found = "\n".join(f"{p.name}: {p.read_bytes()[:2000]!r}" for p in result.findings)
    return f"{result.summary()}\n{found}\n--- log tail ---\n{result.log[-6000:]}"


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    before = files_under(FUZZ_DIR)
    result = run_target(target, SECONDS, tmp_path)
    assert result.ok, failure_report(result)
    # It fuzzed (not just replayed the seeds): at least 10 inputs a second.
    assert result.runs >= 10 * SECONDS, result.summary()
    assert result.seconds >= SECONDS, result.summary()
    assert files_under(FUZZ_DIR) == before, "the run wrote into the checkout"


# Harnesses that fail on purpose: the wrapper must report each way a harness
# can fail, and leave the failing input in the work directory.
FAILING_HARNESS = """
import ctypes
import sys
import time

import atheris


def test_one_input(data: bytes) -> None:
    if data.startswith(b"{trigger}"):
        {failure}


atheris.Setup(sys.argv, test_one_input)
atheris.Fuzz()
"""


@pytest.mark.parametrize(
    "failure, prefix",
    [
        ("raise ValueError('found')", "crash-"),
        ("ctypes.string_at(0)", "crash-"),  # SIGSEGV in native code
        ("time.sleep(60)", "timeout-"),
    ],
    ids=["exception", "segfault", "hang"],
)
def test_wrapper_reports_a_failing_harness(tmp_path: Path, failure: str, prefix: str) -> None:
    script = tmp_path / "fuzz_failing.py"
    script.write_text(textwrap.dedent(FAILING_HARNESS).format(trigger="boom", failure=failure), encoding="utf-8")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "trigger").write_bytes(b"boom!")
    result = fuzz(script, seeds, tmp_path / "work", 30, input_timeout_s=2)
    assert not result.ok
    assert result.returncode != 0, result.log[-2000:]
    assert [p.name.startswith(prefix) for p in result.findings] == [True], result.log[-2000:]
    assert result.findings[0].read_bytes() == b"boom!"
