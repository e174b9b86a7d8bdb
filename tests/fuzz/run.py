"""Runs the atheris fuzz harnesses in this directory for a bounded time.

    python tests/fuzz/run.py manifest --seconds 3600          # one target, an hour
    python tests/fuzz/run.py all --seconds 60                 # every target in turn
    python tests/fuzz/run.py msgpack --seconds 600 --work /tmp/fuzz-msgpack

Targets: wasmfile, manifest, signature, msgpack, preinit (fuzz_<target>.py here). Each
run starts from the committed seeds in corpus/<target>/ and writes what it
adds, its log and any crash-*, timeout-* or oom-* input into the work
directory (a fresh temporary one by default, kept when something was found),
never into the checkout. A run fails if the harness exits non-zero or leaves
such an input. Replay one with `python tests/fuzz/fuzz_<target>.py <file>`.

The harnesses run with the checkout's tests/fuzz/ as their only local path,
so they import the installed sqlwasm (see tests/test_limits.py: the
checkout's sqlwasm/ may have no compiled native part).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("wasmfile", "manifest", "signature", "msgpack", "preinit")
# Longest input per target: long enough for what the format can say (a
# manifest with an integer of thousands of digits), short enough to stay fast.
MAX_LEN = {"wasmfile": 4096, "manifest": 16384, "signature": 4096, "msgpack": 8192, "preinit": 8192}
INPUT_TIMEOUT_S = 20  # one input taking longer is a finding (libFuzzer's timeout-*)
STARTUP_GRACE_S = 120  # on top of --seconds before the whole run counts as hung
FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


@dataclass
class FuzzRun:
    """What one harness run did, from libFuzzer's final statistics."""

    name: str
    returncode: int
    seconds: int = 0
    runs: int = 0
    coverage: int = 0  # instrumented Python branches ("cov")
    features: int = 0  # libFuzzer's coverage features ("ft")
    corpus_units: int = 0
    new_units: int = 0
    findings: list[Path] = field(default_factory=list)
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.findings

    def summary(self) -> str:
        outcome = "ok" if self.ok else f"FAILED (exit {self.returncode}, {len(self.findings)} finding(s))"
        return (
            f"{self.name}: {outcome}: {self.runs} runs in {self.seconds} s, cov {self.coverage}, "
            f"ft {self.features}, corpus {self.corpus_units} units ({self.new_units} new)"
        )


def _last_int(pattern: str, text: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else 0


def fuzz(
    script: Path,
    seeds: Path,
    work: Path,
    seconds: int,
    *,
    max_len: int = 4096,
    dictionary: Path | None = None,
    input_timeout_s: int = INPUT_TIMEOUT_S,
) -> FuzzRun:
    """Runs one atheris harness for `seconds`; everything it writes goes under work."""
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(script),
        str(corpus),  # libFuzzer writes new inputs into the first directory only
        str(seeds),
        f"-max_total_time={max(seconds, 1)}",
        f"-max_len={max_len}",
        f"-timeout={input_timeout_s}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    if dictionary is not None:
        command.append(f"-dict={dictionary}")
    try:
        done = subprocess.run(
            command, cwd=work, capture_output=True, text=True, errors="replace", timeout=seconds + STARTUP_GRACE_S
        )
        returncode, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        returncode, log = -9, f"{exc}\n{exc.stderr!r}"
    (work / "fuzz.log").write_text(log, encoding="utf-8")
    return FuzzRun(
        name=script.stem.removeprefix("fuzz_"),
        returncode=returncode,
        seconds=_last_int(r"Done \d+ runs in (\d+) second", log),
        runs=_last_int(r"stat::number_of_executed_units:\s+(\d+)", log),
        coverage=_last_int(r" cov: (\d+)", log),
        features=_last_int(r" ft: (\d+)", log),
        corpus_units=_last_int(r" corp: (\d+)/", log),
        new_units=_last_int(r"stat::new_units_added:\s+(\d+)", log),
        findings=sorted(p for p in artifacts.iterdir() if p.name.startswith(FINDING_PREFIXES)),
        log=log,
    )


def run_target(target: str, seconds: int, work: Path) -> FuzzRun:
    """Fuzzes one of TARGETS from its committed seed corpus."""
    dictionary = HERE / f"{target}.dict"
    return fuzz(
        HERE / f"fuzz_{target}.py",
        HERE / "corpus" / target,
        work,
        seconds,
        max_len=MAX_LEN[target],
        dictionary=dictionary if dictionary.exists() else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    parser.add_argument("--work", type=Path, help="keep corpus, log and findings here (default: a temporary directory)")
    args = parser.parse_args(argv)
    targets = TARGETS if "all" in args.targets else tuple(dict.fromkeys(args.targets))
    failed = False
    for target in targets:
        if args.work is not None:
            work = args.work / target if len(targets) > 1 else args.work
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(tempfile.mkdtemp(prefix=f"sqlwasm-fuzz-{target}-"))
        result = run_target(target, args.seconds, work)
        print(result.summary(), flush=True)
        if not result.ok:
            failed = True
            print(result.log[-4000:], file=sys.stderr)
            for finding in result.findings:
                print(f"  finding: {finding} (replay: python {HERE / f'fuzz_{target}.py'} {finding})")
            print(f"  kept: {work}")
        elif args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
