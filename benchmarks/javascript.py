"""JavaScript guests: per-row cost, instantiation with and without the
pre-initialized snapshot, and geo_haversine in JS against the C module.

    python -m benchmarks.javascript [--rows N] [--repeats K] [--cold]

--cold builds the engine into an empty cache directory first and reports
how long that took (otherwise the build uses the user cache as it is).
Writes benchmarks/results/javascript.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm._build import pack
from sqlwasm._build._javascript import compile_javascript
from sqlwasm._manifest import manifest_from_toml
from sqlwasm._signing import generate_keypair, load_private_key, sign

from ._common import best_of, measure_interleaved, print_against, print_checks, workdir, write_results

SOURCE = """\
export function js_add(a, b) { return a + b; }
export class js_sum {
  constructor() { this.total = 0; }
  step(x) { this.total += x; }
  final() { return this.total; }
}

const EARTH_RADIUS_KM = 6371.0088;
const radians = (d) => d * Math.PI / 180;
export function js_haversine(lat1, lon1, lat2, lon2) {
  const sdlat = Math.sin(radians(lat2 - lat1) / 2), sdlon = Math.sin(radians(lon2 - lon1) / 2);
  const a = Math.min(1, sdlat * sdlat + Math.cos(radians(lat1)) * Math.cos(radians(lat2)) * sdlon * sdlon);
  return 2 * EARTH_RADIUS_KM * Math.atan2(Math.sqrt(a), Math.sqrt(1 - a));
}
"""

MANIFEST = """\
sqlwasm = 1
name = "jsbench"
version = "1.0.0"

[[functions]]
name = "js_add"
abi = "msgpack"
args = ["integer", "integer"]
returns = "integer"
deterministic = true

[[functions]]
name = "js_sum"
kind = "aggregate"
abi = "msgpack"
args = ["integer"]
returns = "integer"
exports = { init = "js_sum.init", step = "js_sum.step", final = "js_sum.final", drop = "js_sum.drop" }

[[functions]]
name = "js_haversine"
abi = "msgpack"
args = ["real", "real", "real", "real"]
returns = "real"
deterministic = true
"""

TARGET_NS_PER_ROW = 2_000


def built(tmpdir: Path, key: Path, *, snapshot: bool) -> tuple[bytes, float]:
    started = time.perf_counter()
    wasm = compile_javascript(tmpdir / "bench.js", snapshot=snapshot)
    packed = sign(pack(wasm, manifest_from_toml(tmpdir / "bench.toml")), load_private_key(key))
    return packed, time.perf_counter() - started


def instantiation(runtime: sqlwasm.Runtime, module: sqlwasm.Module, repeats: int) -> tuple[float, float]:
    """Best seconds for a new connection with the module installed, and for
    that plus its first call (where a module without snapshot evaluates its JS)."""

    def connect_only() -> None:
        runtime.connect(":memory:", [module]).close()

    def connect_and_call() -> None:
        conn = runtime.connect(":memory:", [module])
        assert conn.execute("SELECT js_add(1, 2)").fetchall() == [(3,)]
        conn.close()

    return best_of(repeats, connect_only)[0], best_of(repeats, connect_and_call)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="build the engine into an empty cache first")
    args = parser.parse_args(argv)

    with workdir() as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "bench.js").write_text(SOURCE)
        (tmpdir / "bench.toml").write_text(MANIFEST)
        key, pub = generate_keypair("bench", tmpdir)
        results: dict[str, object] = {"rows": args.rows}
        if args.cold:
            os.environ["SQLWASM_CACHE_DIR"] = tempfile.mkdtemp(prefix="sqlwasm-js-cold-", dir=tmpdir)
        snapshot_wasm, build_seconds = built(tmpdir, key, snapshot=True)
        lazy_wasm, lazy_build_seconds = built(tmpdir, key, snapshot=False)
        results["build_seconds" + ("_cold" if args.cold else "")] = round(build_seconds, 2)
        results["build_seconds_warm_without_snapshot"] = round(lazy_build_seconds, 2)
        results["module_bytes"] = {"snapshot": len(snapshot_wasm), "without snapshot": len(lazy_wasm)}
        print(f"build: {build_seconds:.1f} s{' (cold: engine compiled)' if args.cold else ''}; "
              f"module {len(snapshot_wasm)} bytes (without snapshot {len(lazy_wasm)})")

        runtime = sqlwasm.Runtime(trusted_keys=[pub, EXAMPLES_PUBLIC_KEY], cache_dir=None)
        with_snapshot, without_snapshot = runtime.load(snapshot_wasm), runtime.load(lazy_wasm)
        runtime.connect(":memory:", [with_snapshot]).close()  # compile both before timing
        runtime.connect(":memory:", [without_snapshot]).close()
        repeats = max(20, args.repeats)
        inst: dict[str, dict[str, float]] = {}
        for label, module in (("snapshot", with_snapshot), ("without snapshot", without_snapshot)):
            connect_s, first_call_s = instantiation(runtime, module, repeats)
            inst[label] = {
                "connect_ms": round(connect_s * 1e3, 3),
                "connect_and_first_call_ms": round(first_call_s * 1e3, 3),
            }
            print(f"  instance ({label}): connect {connect_s * 1e3:.2f} ms, + first call {first_call_s * 1e3:.2f} ms")
        results["instantiation"] = inst

        conn = runtime.connect(":memory:", [with_snapshot, runtime.load(module_path("geo"))])
        conn.execute(
            "CREATE TABLE t(a INTEGER, b INTEGER, lat1 REAL, lon1 REAL, lat2 REAL, lon2 REAL); "
            "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "SELECT i, i * 7, (i % 180) - 89.5, (i % 360) - 179.5, ((i * 7) % 180) - 89.5, ((i * 13) % 360) - 179.5 "
            "FROM c",
            (args.rows,),
        )
        added = conn.execute("SELECT sum(a + b) FROM t").fetchall()[0][0]
        summed = conn.execute("SELECT sum(a) FROM t").fetchall()[0][0]
        distance = conn.execute("SELECT sum(geo_haversine(lat1, lon1, lat2, lon2)) FROM t").fetchall()[0][0]
        js_distance = conn.execute("SELECT sum(js_haversine(lat1, lon1, lat2, lon2)) FROM t").fetchall()[0][0]
        assert isinstance(distance, float) and isinstance(js_distance, float)
        if abs(js_distance - distance) > 1e-6 * distance:
            raise SystemExit(f"js_haversine disagrees with geo_haversine: {js_distance} != {distance}")
        rows = args.rows
        ns = measure_interleaved(
            conn,
            {
                "builtin a+b": ("SELECT sum(a + b) FROM t", rows, added),
                "JS js_add": ("SELECT sum(js_add(a, b)) FROM t", rows, added),
                "builtin sum(a)": ("SELECT sum(a) FROM t", rows, summed),
                "JS aggregate js_sum(a)": ("SELECT js_sum(a) FROM t", rows, summed),
                "C geo_haversine (raw)": ("SELECT sum(geo_haversine(lat1, lon1, lat2, lon2)) FROM t", rows, distance),
                "JS js_haversine": ("SELECT sum(js_haversine(lat1, lon1, lat2, lon2)) FROM t", rows, js_distance),
            },
            args.repeats,
        )
        print(f"per row ({rows} rows, best of {args.repeats}):")
        ratios = print_against(ns, "builtin a+b")
        results["ns_per_row"] = {k: round(v, 1) for k, v in ns.items()}
        results["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
        results["js_haversine / C geo_haversine"] = round(ns["JS js_haversine"] / ns["C geo_haversine (raw)"], 2)
        print(f"  JS haversine / C haversine: {results['js_haversine / C geo_haversine']:.1f}x")
        checks = {
            f"JS scalar <= {TARGET_NS_PER_ROW} ns/row": ns["JS js_add"] <= TARGET_NS_PER_ROW,
            "snapshot instantiates faster (connect + first call)": inst["snapshot"]["connect_and_first_call_ms"]
            < inst["without snapshot"]["connect_and_first_call_ms"],
        }
        print_checks(checks)
        results["checks"] = checks
        print(f"wrote {write_results('javascript', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
