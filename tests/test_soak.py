"""Soak: 10,000 connect/install/close cycles, and 1,000,000 guest calls on
4 threads with traps, timeouts and interrupts mixed in. Resident memory,
address space and open file descriptors must stay flat.

Each soak runs in a child interpreter: a crash (a signal) or a hang there
fails its test with the child's output instead of taking pytest down, and
the figures measured in it are the soak's alone. Run with `pytest -s` to see
them; the assertion messages carry them too.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import apsw
from conftest import wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_limits import LOOPS_WAT, loops_manifest
from test_threads import STATE_WAT, WORK_MANIFEST, WORK_WAT, run_threads, state_manifest

import sqlwasm
from sqlwasm import _connection

THREADS = 4
CYCLES = 10_000
WARM_UP_CYCLES = 1_000
CALLS = 1_000_000
ROWS = 2_500  # rows of one batch query; each row makes two guest calls
SPIN_TIMEOUT_MS = 20

# A connection holding one small module costs ~85 KB resident (measured
# here), so a leak of one connection's store per cycle would be ~850 MB over
# the soak. 8 MiB catches any leak above ~840 bytes a cycle or 8 bytes a call.
RSS_TOLERANCE = 8 * 1024 * 1024
# Every store's memory reserves 4 GiB of address space (sqlwasm/_engine_wasmtime.py
# MEMORY_RESERVATION): a single store that outlives its connection is over this.
ADDRESS_SPACE_TOLERANCE = 2 * 1024 * 1024 * 1024
# A child that runs longer is hung: it dumps every thread's stack and exits.
HANG_SECONDS = 150
TESTS = Path(__file__).resolve().parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes resident
    address_space: int  # bytes mapped (VmSize)
    fds: int  # open file descriptors


def usage(runtime: sqlwasm.Runtime, module: sqlwasm.Module) -> Usage:
    """What the process holds now. The stores of closed connections are
    dropped by sqlwasm's reaper thread soon after close: measure once they all are."""
    gc.collect()
    runtime.connect(":memory:", [module]).close()
    _connection.reap_closed_now()
    with open("/proc/self/statm") as statm:
        size, resident = statm.read().split()[:2]
    return Usage(int(resident) * PAGE_SIZE, int(size) * PAGE_SIZE, len(os.listdir("/proc/self/fd")))


def mib(n: int) -> str:
    return f"{n / 2**20:+.1f} MiB" if n else "+0 MiB"


# --------------------------------------------------------------- the child


def soak_runtime() -> tuple[sqlwasm.Runtime, dict[str, sqlwasm.Module]]:
    """A Runtime and its precompiled, signed modules: 'w' (raw and msgpack
    work), 's' (a fresh instance per statement; s_boom traps on 0), 'l'
    (loops with a 20 ms time limit) and 'li' (the same loops, for interrupts,
    with the default limit as a backstop)."""
    key = Ed25519PrivateKey.generate()
    runtime = sqlwasm.Runtime(trusted_keys=[key.public_key()])
    sources = {
        "w": (WORK_WAT, WORK_MANIFEST),
        "s": (STATE_WAT, state_manifest(instance="statement")),
        "l": (LOOPS_WAT, loops_manifest(limits={"timeout_ms": SPIN_TIMEOUT_MS})),
        "li": (LOOPS_WAT, loops_manifest("li")),
    }
    return runtime, {name: runtime.load(wasm_module(wat, m, key=key)) for name, (wat, m) in sources.items()}


def one_cycle(runtime: sqlwasm.Runtime, modules: dict[str, sqlwasm.Module], k: int, i: int) -> None:
    """Connect, install, call, close; four ways in turn."""
    way = i % 4
    if way == 0:  # Runtime.connect, then close()
        conn = runtime.connect(":memory:", [modules["w"]])
        assert conn.execute("SELECT w_mix(?, ?)", (i, k)).fetchall() == [(3 * i + k,)]
        conn.close()
    elif way == 1:  # install into a plain connection, with a per-statement module too
        conn = apsw.Connection(":memory:")
        runtime.install(conn, modules["w"])
        runtime.install(conn, modules["s"])
        assert conn.execute("SELECT w_id(?), s_next(0), s_next(0)", (i,)).fetchall() == [(i, 1, 2)]
        assert conn.execute("SELECT s_next(0)").fetchall() == [(1,)]
        conn.close()
    elif way == 2:  # never closed: dropped, so the connection closes as it is freed
        conn = runtime.connect(":memory:", [modules["w"], modules["s"]])
        assert conn.execute("SELECT w_mix(s_next(0), ?)", (i,)).fetchall() == [(3 + i,)]
        del conn
    else:  # never closed, and left in a reference cycle: the garbage collector frees it, on whatever thread runs it
        conn = runtime.connect(":memory:", [modules["w"]])
        assert conn.execute("SELECT w_mix(?, 1)", (i,)).fetchall() == [(3 * i + 1,)]
        cycle: list[Any] = [conn]
        cycle.append(cycle)
        del conn, cycle


def soak_cycles() -> dict[str, Any]:
    runtime, modules = soak_runtime()

    def cycles(count: int) -> Callable[[int], int]:
        def work(k: int) -> int:
            for i in range(count):
                one_cycle(runtime, modules, k, i)
                if i % 500 == 499:
                    gc.collect()  # from every thread, while the others connect and close
            return count

        return work

    run_threads(THREADS, cycles(WARM_UP_CYCLES // THREADS))
    before = usage(runtime, modules["w"])
    start = time.monotonic()
    done = sum(run_threads(THREADS, cycles(CYCLES // THREADS)).values())
    elapsed = time.monotonic() - start
    after = usage(runtime, modules["w"])
    return {"before": asdict(before), "after": asdict(after), "cycles": done, "seconds": elapsed}


@dataclass
class Tally:
    calls: int = 0  # guest calls whose results were checked
    traps: int = 0
    stack_overflows: int = 0
    timeouts: int = 0
    guest_interrupts: int = 0  # the guest was stopped: "<module>.<function>: interrupted"
    statement_interrupts: int = 0  # SQLite stopped the statement before the guest ran


def failure(conn: apsw.Connection, sql: str, *bindings: Any) -> apsw.Error:
    try:
        rows = conn.execute(sql, bindings).fetchall()
    except apsw.Error as exc:
        return exc
    raise AssertionError(f"{sql} returned {rows} instead of failing")


def interrupted(conn: apsw.Connection, sql: str) -> apsw.Error:
    """Runs sql, which never ends by itself, while another thread calls
    conn.interrupt() every 2 ms (after 10 ms) until it does. (An interrupt that lands
    before the statement starts is a no-op in SQLite, hence the repeats; the
    thread is joined before the next statement, so none can hit that.)"""
    finished = threading.Event()

    def keep_interrupting() -> None:
        finished.wait(0.01)  # mostly into the running guest, not before it
        while not finished.wait(0.002):
            conn.interrupt()

    interrupter = threading.Thread(target=keep_interrupting)
    interrupter.start()
    try:
        return failure(conn, sql)
    finally:
        finished.set()
        interrupter.join()


def soak_round(conn: apsw.Connection, k: int, r: int, tally: Tally) -> None:
    """One batch of checked calls, then one failure of the kind r selects."""
    total = ROWS * (ROWS + 1) // 2
    series = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
    got = conn.execute(series + "SELECT sum(w_mix(i, ?)), sum(w_id(i + ?)) FROM n", (k, r)).fetchall()
    assert got == [(3 * total + k * ROWS, total + r * ROWS)], (k, r, got)
    tally.calls += 2 * ROWS
    kind = r % 4
    if kind == 0:  # a trap half-way through a statement that made good calls
        exc = failure(conn, series + "SELECT sum(w_mix(i, 0) + s_boom(? - i)) FROM n", ROWS // 2)
        assert isinstance(exc, apsw.SQLError) and str(exc).startswith("s.s_boom: trap (unreachable)"), exc
        tally.traps += 1
    elif kind == 1:
        exc = failure(conn, "SELECT l_down(0)")
        assert isinstance(exc, apsw.SQLError) and str(exc).startswith("l.l_down: trap (stack overflow)"), exc
        tally.stack_overflows += 1
    elif kind == 2:
        exc = failure(conn, "SELECT l_forever(0)")
        expected = f"l.l_forever: time limit of {SPIN_TIMEOUT_MS} ms exceeded"
        assert isinstance(exc, apsw.SQLError) and str(exc).startswith(expected), exc
        tally.timeouts += 1
    else:
        exc = interrupted(conn, "SELECT li_forever(0)")
        if isinstance(exc, apsw.InterruptError):
            tally.statement_interrupts += 1
        else:
            assert isinstance(exc, apsw.SQLError) and str(exc).startswith("li.li_forever: interrupted"), exc
            tally.guest_interrupts += 1
    # the instance of a per-statement module is fresh again; the others answer
    assert conn.execute("SELECT s_next(0), s_next(0), l_ok(?), li_spin(?)", (r, k)).fetchall() == [(1, 2, r + 1, k)]
    tally.calls += 4


def soak_calls() -> dict[str, Any]:
    runtime, modules = soak_runtime()

    def rounds(count: int) -> Callable[[int], Tally]:
        def work(k: int) -> Tally:
            tally = Tally()
            conn = runtime.connect(":memory:", modules.values())
            try:
                for r in range(count):
                    soak_round(conn, k, r, tally)
            finally:
                conn.close()
            return tally

        return work

    run_threads(THREADS, rounds(8))  # two of each failure per thread
    before = usage(runtime, modules["w"])
    start = time.monotonic()
    tallies = run_threads(THREADS, rounds(CALLS // (2 * ROWS * THREADS))).values()
    elapsed = time.monotonic() - start
    after = usage(runtime, modules["w"])
    summed = {field: sum(getattr(t, field) for t in tallies) for field in asdict(Tally())}
    return {"before": asdict(before), "after": asdict(after), "seconds": elapsed, **summed}


SOAKS: dict[str, Callable[[], dict[str, Any]]] = {"cycles": soak_cycles, "calls": soak_calls}


def child_main(soak: str) -> None:
    """Entry point of the child interpreter: runs one soak, prints its
    figures as one JSON line."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    figures = SOAKS[soak]()
    print(json.dumps(figures), flush=True)


# --------------------------------------------------------------- the tests


def run_soak(soak: str, cwd: Path) -> dict[str, Any]:
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_soak; test_soak.child_main({soak!r})"
    # cwd: outside the checkout (as in test_limits), so sqlwasm is the installed one
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS + 30,
        cwd=cwd,
    )
    if done.returncode < 0:
        raise AssertionError(
            f"the {soak} soak was killed by {signal.Signals(-done.returncode).name}:\n{done.stderr[-6000:]}"
        )
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-6000:])
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return figures


def check_flat(what: str, figures: dict[str, Any]) -> str:
    """Prints the figures and asserts they stayed flat; returns the summary."""
    before, after = Usage(**figures["before"]), Usage(**figures["after"])
    summary = (
        f"{what} in {figures['seconds']:.1f} s: resident {before.rss / 2**20:.1f} -> {after.rss / 2**20:.1f} MiB "
        f"({mib(after.rss - before.rss)}, tolerance {RSS_TOLERANCE // 2**20} MiB), address space "
        f"{mib(after.address_space - before.address_space)} (tolerance {ADDRESS_SPACE_TOLERANCE // 2**30} GiB), "
        f"open fds {before.fds} -> {after.fds}"
    )
    print("\n" + summary)
    assert after.rss - before.rss < RSS_TOLERANCE, summary
    assert after.address_space - before.address_space < ADDRESS_SPACE_TOLERANCE, summary
    assert after.fds == before.fds, summary
    return summary


def test_connect_install_close_cycles(tmp_path: Path) -> None:
    figures = run_soak("cycles", tmp_path)
    assert figures["cycles"] == CYCLES
    check_flat(
        f"{figures['cycles']} connect/install/close cycles on {THREADS} threads "
        f"({figures['seconds'] / figures['cycles'] * 1000:.2f} ms each)",
        figures,
    )


def test_guest_calls_with_traps_timeouts_and_interrupts(tmp_path: Path) -> None:
    figures = run_soak("calls", tmp_path)
    failures = {k: figures[k] for k in ("traps", "stack_overflows", "timeouts", "guest_interrupts", "statement_interrupts")}
    summary = check_flat(f"{figures['calls']} checked guest calls on {THREADS} threads with {failures}", figures)
    assert figures["calls"] >= CALLS, summary
    rounds = CALLS // (2 * ROWS * THREADS)
    of_kind = [THREADS * len(range(kind, rounds, 4)) for kind in range(4)]
    assert [figures["traps"], figures["stack_overflows"], figures["timeouts"]] == of_kind[:3], summary
    # every interrupt stopped its statement, and most of them inside the guest
    assert figures["guest_interrupts"] + figures["statement_interrupts"] == of_kind[3], summary
    assert figures["guest_interrupts"] > figures["statement_interrupts"], summary
