"""What pre-initialization saves: a new connection's first call of a guest
whose initializer does real work, with and without a snapshot.

    python -m benchmarks.preinit [--repeats K]

The guest (benchmarks/guests/sieve.c) sieves the primes below 2^23 into a
1 MiB table in sqlwasm_init; without a snapshot its first call does that, a
snapshot (sqlwasm._preinit.preinit) starts with the table in its data
segments. Measured, best of K, one process, the two interleaved: install
into a new connection plus the first `SELECT is_prime(...)` (what every
connection pays), and load (verify + compile, no cache). Also prints the
modules' sizes and the time preinit itself takes. Writes
benchmarks/results/preinit.json.
"""

from __future__ import annotations

import argparse
import time

import apsw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm._build import build
from sqlwasm._preinit import preinit
from sqlwasm._signing import sign

from ._common import HERE, best_of, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    original = build(HERE / "guests" / "sieve.c", HERE / "guests" / "sieve.toml")
    started = time.perf_counter()
    snapshot = preinit(original)
    preinit_s = time.perf_counter() - started
    key = Ed25519PrivateKey.generate()
    modules = {"without snapshot": sign(original, key), "with snapshot": sign(snapshot, key)}
    runtime = sqlwasm.Runtime(trusted_keys=[key.public_key()], cache_dir=None)
    loaded = {label: runtime.load(data) for label, data in modules.items()}

    first_call = {label: float("inf") for label in modules}
    load = {label: float("inf") for label in modules}
    for _ in range(args.repeats):
        for label, data in modules.items():
            conn = apsw.Connection(":memory:")
            started = time.perf_counter()
            runtime.install(conn, loaded[label])
            result = conn.execute("SELECT is_prime(8388593)").fetchall()
            first_call[label] = min(first_call[label], time.perf_counter() - started)
            assert result == [(1,)], result
            conn.close()
            seconds, _ = best_of(1, lambda: sqlwasm.Runtime(trusted_keys=[key.public_key()], cache_dir=None).load(data))
            load[label] = min(load[label], seconds)

    print(f"install + first call, best of {args.repeats}:")
    for label in modules:
        print(f"  {label}: {first_call[label] * 1e3:.3f} ms")
    speedup = first_call["without snapshot"] / first_call["with snapshot"]
    print(f"  the snapshot is {speedup:.1f}x faster")
    print("load (verify + compile):")
    for label in modules:
        print(f"  {label}: {load[label] * 1e3:.2f} ms")
    print(f"module size: {len(original):,} bytes without, {len(snapshot):,} bytes with the snapshot")
    print(f"preinit itself: {preinit_s * 1e3:.1f} ms")
    write_results(
        "preinit",
        {
            "first_call_ms": {label: round(s * 1e3, 3) for label, s in first_call.items()},
            "load_ms": {label: round(s * 1e3, 2) for label, s in load.items()},
            "bytes": {"without snapshot": len(original), "with snapshot": len(snapshot)},
            "preinit_ms": round(preinit_s * 1e3, 1),
            "speedup": round(speedup, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
