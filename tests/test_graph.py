"""extensions/graph: graph_reachable(start), a table function that walks the
table edges(src, dst) through the sql capability, against a Python
breadth-first search."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterator

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm import CapabilityError

Edges = list[tuple[int, int]]


def reachable(edges: Edges, start: int) -> dict[int, int]:
    """node -> the fewest edges from start (the reference)."""
    neighbours: dict[int, list[int]] = {}
    for src, dst in edges:
        neighbours.setdefault(src, []).append(dst)
    depth = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for dst in neighbours.get(node, []):
            if dst not in depth:
                depth[dst] = depth[node] + 1
                queue.append(dst)
    return depth


def graph_connection(grant: Any = None, **options: Any) -> apsw.Connection:
    conn = apsw.Connection(":memory:")
    conn.execute("CREATE TABLE edges(src INTEGER, dst INTEGER); CREATE TABLE secret(x)")
    runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], grant=grant or {"sql": ["edges"]}, **options)
    runtime.install(conn, module_path("graph"))
    return conn


@pytest.fixture
def conn() -> Iterator[apsw.Connection]:
    connection = graph_connection()
    yield connection
    connection.close()


def walk(conn: apsw.Connection, start: int) -> list[tuple[int, int]]:
    return [tuple(r) for r in conn.execute("SELECT node, depth FROM graph_reachable(?)", (start,))]


def load(conn: apsw.Connection, edges: Edges) -> None:
    conn.execute("DELETE FROM edges")
    conn.executemany("INSERT INTO edges VALUES (?, ?)", edges)


def test_a_small_graph(conn: apsw.Connection) -> None:
    load(conn, [(1, 2), (2, 3), (3, 1), (3, 4), (5, 6), (4, 4)])
    assert walk(conn, 1) == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert walk(conn, 5) == [(5, 0), (6, 1)]
    assert walk(conn, 6) == [(6, 0)]
    assert walk(conn, 99) == [(99, 0)]  # the start, even outside the table
    assert conn.execute("SELECT graph_reachable.node FROM graph_reachable(NULL)").fetchall() == []


@given(
    edges=st.lists(st.tuples(st.integers(-5, 25), st.integers(-5, 25)), max_size=80),
    start=st.integers(-5, 25),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_matches_breadth_first_search(conn: apsw.Connection, edges: Edges, start: int) -> None:
    load(conn, edges)
    rows = walk(conn, start)
    assert dict(rows) == reachable(edges, start)
    assert len(rows) == len(dict(rows))  # each node once
    assert [d for _, d in rows] == sorted(d for _, d in rows)  # level by level


def test_big_levels_come_in_batches_and_long_chains_work(conn: apsw.Connection) -> None:
    star = [(0, n) for n in range(1, 20001)] + [(n, -n) for n in range(1, 20001, 1000)]
    load(conn, star)
    rows = walk(conn, 0)
    assert dict(rows) == reachable(star, 0) and len(rows) == 20021
    chain = [(n, n + 1) for n in range(300)]
    load(conn, chain)
    assert walk(conn, 0)[-1] == (300, 300)


def test_in_a_join_once_per_outer_row(conn: apsw.Connection) -> None:
    load(conn, [(1, 2), (2, 3), (10, 11)])
    conn.execute("CREATE TABLE starts(id INTEGER); INSERT INTO starts VALUES (1), (10), (3)")
    found = conn.execute(
        "SELECT s.id, count(*), max(g.depth) FROM starts s, graph_reachable(s.id) g GROUP BY s.id ORDER BY s.id"
    ).fetchall()
    assert found == [(1, 3, 2), (3, 1, 0), (10, 2, 1)]


def test_sees_the_callers_uncommitted_edges(conn: apsw.Connection) -> None:
    load(conn, [(1, 2)])
    conn.execute("BEGIN")
    conn.execute("INSERT INTO edges VALUES (2, 3)")
    assert walk(conn, 1) == [(1, 0), (2, 1), (3, 2)]
    conn.execute("ROLLBACK")
    assert walk(conn, 1) == [(1, 0), (2, 1)]


def test_text_nodes_are_an_error(conn: apsw.Connection) -> None:
    load(conn, [(1, "two")])  # type: ignore[list-item]
    with pytest.raises(apsw.SQLError, match="graph.graph_reachable: edges.dst must be an integer, got text"):
        walk(conn, 1)


def test_needs_edges_granted() -> None:
    conn = graph_connection(grant={"sql": ["secret"]})
    try:
        with pytest.raises(apsw.SQLError, match="query refused: table 'edges' was not granted to module 'graph'"):
            walk(conn, 1)
    finally:
        conn.close()
    with pytest.raises(CapabilityError, match="'sql'"):
        graph_connection(grant=["log"])


def test_without_an_edges_table() -> None:
    conn = graph_connection(grant=["sql"])
    try:
        conn.execute("DROP TABLE edges")
        with pytest.raises(apsw.SQLError, match="no such table: edges"):
            walk(conn, 1)
    finally:
        conn.close()


def test_only_from_top_level_sql(conn: apsw.Connection) -> None:
    load(conn, [(1, 2)])
    conn.execute("CREATE VIEW from_one AS SELECT node FROM graph_reachable(1)")
    with pytest.raises(apsw.SQLError, match="unsafe use of virtual table"):
        conn.execute("SELECT * FROM from_one").fetchall()


def test_the_walk_counts_against_the_time_limit() -> None:
    conn = graph_connection(timeout_ms=50)
    try:
        load(conn, [(n, n + 1) for n in range(20000)])  # 20000 levels: 20000 queries in one open
        started = time.monotonic()
        with pytest.raises(apsw.SQLError, match="time limit of 50 ms exceeded"):
            walk(conn, 0)
        assert time.monotonic() - started < 1
        assert walk(conn, 19990) == [(19990 + n, n) for n in range(11)]
    finally:
        conn.close()


DEMO = """
SELECT g.depth, group_concat(p.name, ', ') AS people
FROM graph_reachable((SELECT id FROM people WHERE name = 'ada')) AS g
JOIN people AS p ON p.id = g.node
GROUP BY g.depth ORDER BY g.depth
"""


def test_demo_query() -> None:
    """Who ada reaches through 'follows' edges, by distance (the demo's query)."""
    conn = graph_connection(grant={"sql": ["edges"]})
    try:
        conn.execute("CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT)")
        names = ["ada", "grace", "alan", "edsger", "barbara", "ken"]
        conn.executemany("INSERT INTO people VALUES (?, ?)", list(enumerate(names, 1)))
        load(conn, [(1, 2), (1, 3), (2, 4), (3, 4), (4, 5), (6, 1)])
        assert conn.execute(DEMO).fetchall() == [(0, "ada"), (1, "grace, alan"), (2, "edsger"), (3, "barbara")]
    finally:
        conn.close()


def test_the_demos_rail_query() -> None:
    """sqlwasm demo: the cities one and two changes from London, from the
    demo's own data, query and grant."""
    from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

    from sqlwasm._demo import GRANT, MODULES, QUERIES, RAIL_LINKS, build_sample

    runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], grant=GRANT)
    conn = runtime.connect(":memory:", [module_path(name) for name in MODULES])
    try:
        build_sample(conn, 10)
        (sql,) = [sql for title, sql, _ in QUERIES if "graph_reachable" in title]
        rows = {changes: set(cities.split(", ")) for changes, _, cities in conn.execute(sql).fetchall()}
        neighbours = {b for a, b in RAIL_LINKS if a == "London"} | {a for a, b in RAIL_LINKS if b == "London"}
        assert rows[1] == neighbours
        second = {b for a, b in RAIL_LINKS if a in neighbours} | {a for a, b in RAIL_LINKS if b in neighbours}
        assert rows[2] == second - neighbours - {"London"}
        assert set().union(*rows.values()) == {name for link in RAIL_LINKS for name in link} - {"London"}
    finally:
        conn.close()
