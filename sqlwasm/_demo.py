"""`sqlwasm demo`: a sample database and near-data queries with the signed
example modules geo, stats and graph, using only what `pip install .` ships."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from ._apsw_cli import run
from ._runtime import Runtime
from ._table import format_table

# (name, country, lat, lon): public coordinates of some large cities.
CITIES = [
    ("London", "GB", 51.5074, -0.1278), ("Paris", "FR", 48.8566, 2.3522), ("Berlin", "DE", 52.52, 13.405),
    ("Madrid", "ES", 40.4168, -3.7038), ("Rome", "IT", 41.9028, 12.4964), ("Amsterdam", "NL", 52.3676, 4.9041),
    ("Brussels", "BE", 50.8503, 4.3517), ("Dublin", "IE", 53.3498, -6.2603), ("Edinburgh", "GB", 55.9533, -3.1883),
    ("Manchester", "GB", 53.4808, -2.2426), ("Birmingham", "GB", 52.4862, -1.8904), ("Oxford", "GB", 51.752, -1.2577),
    ("Cambridge", "GB", 52.2053, 0.1218), ("Brighton", "GB", 50.8225, -0.1372), ("Lille", "FR", 50.6292, 3.0573),
    ("Calais", "FR", 50.9513, 1.8587), ("Rotterdam", "NL", 51.9244, 4.4777), ("Cologne", "DE", 50.9375, 6.9603),
    ("Zurich", "CH", 47.3769, 8.5417), ("Vienna", "AT", 48.2082, 16.3738), ("Prague", "CZ", 50.0755, 14.4378),
    ("Warsaw", "PL", 52.2297, 21.0122), ("Copenhagen", "DK", 55.6761, 12.5683), ("Stockholm", "SE", 59.3293, 18.0686),
    ("Oslo", "NO", 59.9139, 10.7522), ("Lisbon", "PT", 38.7223, -9.1393), ("Barcelona", "ES", 41.3874, 2.1686),
    ("Milan", "IT", 45.4642, 9.19), ("Munich", "DE", 48.1351, 11.582), ("Hamburg", "DE", 53.5511, 9.9937),
    ("New York", "US", 40.7128, -74.006), ("Toronto", "CA", 43.6532, -79.3832), ("Tokyo", "JP", 35.6762, 139.6503),
    ("Sydney", "AU", -33.8688, 151.2093), ("Cape Town", "ZA", -33.9249, 18.4241),
    ("Sao Paulo", "BR", -23.5505, -46.6333),
]
# Direct rail links between the cities (both ways): the graph the demo walks.
RAIL_LINKS = [
    ("London", "Paris"), ("London", "Brussels"), ("London", "Birmingham"), ("London", "Oxford"),
    ("London", "Cambridge"), ("London", "Brighton"), ("Birmingham", "Manchester"), ("Manchester", "Edinburgh"),
    ("Paris", "Brussels"), ("Paris", "Lille"), ("Lille", "Calais"), ("Paris", "Zurich"), ("Paris", "Barcelona"),
    ("Barcelona", "Madrid"), ("Madrid", "Lisbon"), ("Brussels", "Amsterdam"), ("Amsterdam", "Rotterdam"),
    ("Brussels", "Cologne"), ("Cologne", "Berlin"), ("Cologne", "Hamburg"), ("Hamburg", "Copenhagen"),
    ("Copenhagen", "Stockholm"), ("Stockholm", "Oslo"), ("Berlin", "Prague"), ("Berlin", "Warsaw"),
    ("Prague", "Vienna"), ("Vienna", "Munich"), ("Munich", "Zurich"), ("Zurich", "Milan"), ("Milan", "Rome"),
]  # fmt: skip
LONDON = (51.5074, -0.1278)
# A rough ring around central London (lon lat, as WKT wants).
CENTRAL_LONDON_WKT = "POLYGON((-0.25 51.45, 0.0 51.42, 0.10 51.50, 0.0 51.58, -0.25 51.56, -0.25 51.45))"


def build_sample(conn: Any, rows: int, seed: int = 20261124) -> None:
    """places: the cities; edges: their rail links (by places.rowid);
    readings: sensor readings scattered around them."""
    rng = random.Random(seed)
    conn.execute("CREATE TABLE places(name TEXT, country TEXT, lat REAL, lon REAL)")
    conn.executemany("INSERT INTO places VALUES (?, ?, ?, ?)", CITIES)
    conn.execute("CREATE TABLE edges(src INTEGER, dst INTEGER)")
    conn.executemany(
        "INSERT INTO edges SELECT a.rowid, b.rowid FROM places a, places b WHERE a.name = ? AND b.name = ?",
        [pair for a, b in RAIL_LINKS for pair in ((a, b), (b, a))],
    )
    conn.execute("CREATE TABLE readings(id INTEGER PRIMARY KEY, city TEXT, lat REAL, lon REAL, pm25 REAL)")

    def reading(i: int) -> tuple[int, str, float, float, float]:
        name, _, lat, lon = CITIES[rng.randrange(len(CITIES))]
        return (i, name, lat + rng.gauss(0, 0.08), lon + rng.gauss(0, 0.12), round(rng.lognormvariate(2.3, 0.5), 2))

    with conn:
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)", (reading(i) for i in range(rows)))


QUERIES: list[tuple[str, str, tuple[Any, ...]]] = [
    (
        "The ten cities nearest London (geo_haversine, raw ABI)",
        "SELECT name, country, round(geo_haversine(lat, lon, ?, ?), 1) AS km FROM places ORDER BY km LIMIT 10",
        LONDON,
    ),
    (
        "Readings within 20 km of central London, by geohash cell (msgpack ABI)",
        "SELECT geo_geohash_encode(lat, lon, 4) AS cell, count(*) AS n, round(avg(pm25), 2) AS avg_pm25 "
        "FROM readings WHERE geo_haversine(lat, lon, ?, ?) < 20 GROUP BY cell ORDER BY n DESC LIMIT 5",
        LONDON,
    ),
    (
        "Readings inside a polygon (geo_contains over WKT)",
        "SELECT count(*) AS inside, round(avg(pm25), 2) AS avg_pm25 FROM readings "
        "WHERE city = 'London' AND geo_contains(?, lat, lon)",
        (CENTRAL_LONDON_WKT,),
    ),
    (
        "Air quality by country: median, 90th percentile and stddev of PM2.5 (stats aggregates)",
        "SELECT p.country, count(*) AS n, round(stats_median(r.pm25), 2) AS median, "
        "round(stats_percentile(r.pm25, 0.9), 2) AS p90, round(stats_stddev(r.pm25), 2) AS stddev "
        "FROM readings AS r JOIN places AS p ON p.name = r.city GROUP BY p.country ORDER BY n DESC LIMIT 6",
        (),
    ),
    (
        "A rolling median over the last five readings in Paris (a window function)",
        "SELECT id, pm25, round(stats_median(pm25) OVER (ORDER BY id ROWS BETWEEN 4 PRECEDING AND CURRENT ROW), 2) "
        "AS rolling_median FROM readings WHERE city = 'Paris' ORDER BY id LIMIT 8",
        (),
    ),
    (
        "Readings per 0.05-degree cell over London (geo_grid, a table function)",
        "SELECT round(g.center_lat, 3) AS lat, round(g.center_lon, 3) AS lon, coalesce(c.n, 0) AS n "
        "FROM geo_grid(51.3, -0.4, 51.7, 0.2, 0.05) AS g LEFT JOIN "
        "(SELECT CAST(floor(lat / 0.05) AS INTEGER) AS i, CAST(floor(lon / 0.05) AS INTEGER) AS j, count(*) AS n "
        "FROM readings GROUP BY i, j) AS c ON c.i = g.lat_index AND c.j = g.lon_index "
        "ORDER BY n DESC, lat, lon LIMIT 5",
        (),
    ),
    (
        "Cities by rail from London, by number of changes (graph_reachable reads the edges table: capability sql)",
        "SELECT g.depth AS changes, count(*) AS n, group_concat(p.name, ', ') AS cities "
        "FROM graph_reachable((SELECT rowid FROM places WHERE name = 'London')) AS g "
        "JOIN places AS p ON p.rowid = g.node WHERE g.depth > 0 GROUP BY g.depth ORDER BY g.depth",
        (),
    ),
    (
        "The same function through wasm_call(module, function, args...)",
        "SELECT name, round(wasm_call('geo', 'bearing', ?, ?, lat, lon), 1) AS bearing_from_london "
        "FROM places WHERE country = 'FR' ORDER BY name",
        LONDON,
    ),
]


# The signed example modules the demo loads (docs/cli.md names them), and
# what it grants: graph may read the edges table and nothing else.
MODULES = ("geo", "stats", "graph")
GRANT = {"sql": ["edges"]}


def run_demo(rows: int = 200_000) -> None:
    from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

    print("sqlwasm demo: signed wasm modules as SQL functions, on sample data")
    runtime = Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], grant=GRANT)
    conn = runtime.connect(":memory:")
    for name in MODULES:
        started = time.perf_counter()
        module = runtime.load(module_path(name))
        loaded = time.perf_counter()
        runtime.install(conn, module)
        installed = time.perf_counter()
        print(
            f"  module '{module.name}' {module.version}, signed by key {module.signer}, "
            f"sha256 {module.sha256[:16]}...: "
            f"verify + compile {1e3 * (loaded - started):.1f} ms, install {1e3 * (installed - loaded):.2f} ms"
        )
        print(f"    functions: {', '.join(f.name for f in module.functions)}")

    started = time.perf_counter()
    build_sample(conn, rows)
    print(f"  sample data: {len(CITIES)} places, {rows:,} readings ({time.perf_counter() - started:.2f} s to build)\n")

    for title, sql, params in QUERIES:
        started = time.perf_counter()
        result = run(conn, sql, params)
        elapsed = time.perf_counter() - started
        print(f"{title}  [{1e3 * elapsed:.1f} ms]")
        print(format_table(result.names, result.rows, indent="  ", rule=False))
        print()
    run_shard_demo(conn, rows)
    conn.close()


# The by-country query again, over SHARDS files on Dask: each shard returns
# partial states, the caller merges them (docs/distributed.md).
SHARDS = 8
SHARD_MAP = (
    "SELECT p.country, count(*) AS n, stats_median_partial(r.pm25) AS median, "
    "stats_percentile_partial(r.pm25, 0.9) AS p90, stats_stddev_partial(r.pm25) AS stddev "
    "FROM readings AS r JOIN places AS p ON p.name = r.city GROUP BY p.country"
)
SHARD_REDUCE = (
    "SELECT country, sum(n) AS n, round(stats_median_merge(median), 2) AS median, "
    "round(stats_percentile_merge(p90), 2) AS p90, round(stats_stddev_merge(stddev), 2) AS stddev "
    "FROM map GROUP BY country ORDER BY n DESC, country LIMIT 6"
)
SINGLE_FILE = (
    "SELECT p.country, count(*) AS n, round(stats_median(r.pm25), 2) AS median, "
    "round(stats_percentile(r.pm25, 0.9), 2) AS p90, round(stats_stddev(r.pm25), 2) AS stddev "
    "FROM readings AS r JOIN places AS p ON p.name = r.city GROUP BY p.country ORDER BY n DESC, p.country LIMIT 6"
)


def write_shards(conn: Any, directory: Path, shards: int = SHARDS) -> list[Path]:
    """The sample's readings split by id into `shards` SQLite files, each with every place."""
    paths = []
    for k in range(shards):
        path = directory / f"readings-{k}.db"
        conn.execute("ATTACH ? AS shard", (str(path),))
        try:
            conn.execute(
                "CREATE TABLE shard.places AS SELECT * FROM main.places; "
                "CREATE TABLE shard.readings AS SELECT * FROM main.readings WHERE id % ? = ?",
                (shards, k),
            )
        finally:
            conn.execute("DETACH shard")
        paths.append(path)
    return paths


def run_shard_demo(conn: Any, rows: int) -> None:
    """With Dask installed (pip install '.[dask]'): the by-country statistics
    over 8 shard files through partial aggregates, beside the one-file answer."""
    import importlib.util

    from . import distributed

    if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
        print(f"(pip install '.[dask]' to also run the by-country query over {SHARDS} shard files on Dask)")
        return
    from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

    one_file = run(conn, SINGLE_FILE, ())
    with tempfile.TemporaryDirectory(prefix="sqlwasm-demo-") as tmp:
        paths = write_shards(conn, Path(tmp))
        started = time.perf_counter()
        names, merged = distributed.query_with_columns(
            [str(p) for p in paths], SHARD_MAP, SHARD_REDUCE,
            modules=[module_path("stats")], trusted_keys=[EXAMPLES_PUBLIC_KEY], workers=2,
        )
        elapsed = time.perf_counter() - started
    print(
        f"The same statistics over {SHARDS} shard files on Dask (2 worker processes): each shard sends "
        f"stats_*_partial states, the caller merges them  [{1e3 * elapsed:.0f} ms, cluster start included]"
    )
    print(format_table(list(names), merged, indent="  ", rule=False))
    same = [tuple(r) for r in merged] == [tuple(r) for r in one_file.rows]
    print(f"  equal to the one-file answer: {'yes' if same else 'NO'}")
    print()
