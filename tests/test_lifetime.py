"""Connection and store lifetimes (sqlwasm/_runtime.py, native/): no thread,
garbage-collection, close, exit or fork pattern frees a store that native
code can still enter, or leaves time limits dead.

Each scenario runs in a child process, so a crash or hang fails one test
(with the child's output) instead of taking the session down.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KeyPair, wasm_module
from test_limits import LOOPS_WAT, loops_manifest


def run_child(script: str, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # cwd: outside the checkout, whose sqlwasm/ may have no compiled native part
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.fixture
def loops_file(keypair: KeyPair, tmp_path: Path) -> Path:
    path = tmp_path / "l.wasm"
    path.write_bytes(wasm_module(LOOPS_WAT, loops_manifest(), key=keypair.private))
    return path


# APSW's testIssue31 in miniature: threads share two connections, close and
# replace them, collect garbage and call guests, while every connection gets
# modules installed. Before stores were tied to SQLite's lifetime this hung
# or crashed (wasmtime_store_delete from a finalizer on another thread).
SHARED_CONNECTIONS = """
import gc, random, sys, threading, time
import apsw, sqlwasm
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY, {pub!r}])
modules = [runtime.load(module_path(n)) for n in ("geo", "stats", "text")] + [runtime.load({loops!r})]
path = {db!r}

def make():
    conn = apsw.Connection(path)
    conn.set_busy_timeout(50)
    for m in modules:
        runtime.install(conn, m)
    return conn

setup = make()
setup.execute("CREATE TABLE IF NOT EXISTS t(x)")
setup.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(200)])
setup.close()
shared = [make(), make()]
calls = [0]
end = time.monotonic() + {seconds}
expected = apsw.BusyError, apsw.ConnectionClosedError, apsw.CursorClosedError, apsw.ThreadingViolationError

def work():
    while time.monotonic() < end:
        which = random.randrange(2)
        conn = shared[which]
        action = random.randrange(6)
        try:
            if action == 0:
                assert conn.execute("SELECT sum(l_ok(x)) FROM t").fetchall()[0][0] is not None
                calls[0] += 1
            elif action == 1:
                conn.execute("SELECT stats_median(x), geo_haversine(0, 0, x, x) FROM t").fetchall()
                calls[0] += 1
            elif action == 2:
                time.sleep(0.005)
                if random.random() < 0.5:
                    conn.close()
                shared[which] = make()
            elif action == 3:
                gc.collect()
            elif action == 4:
                with conn:
                    conn.execute("INSERT INTO t VALUES (l_ok(?))", (random.randrange(100),))
            else:
                try:
                    conn.execute("SELECT l_spin(50000000)").fetchall()
                except apsw.SQLError:
                    pass
        except expected:
            pass
        time.sleep(0.001)

threads = [threading.Thread(target=work) for _ in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("calls", calls[0] > 0, flush=True)
"""


def test_threads_sharing_closing_and_collecting_connections(keypair: KeyPair, loops_file: Path, tmp_path: Path) -> None:
    script = SHARED_CONNECTIONS.format(
        pub=str(keypair.pub_path), loops=str(loops_file), db=str(tmp_path / "shared.db"), seconds=6
    )
    done = run_child(script, tmp_path)
    assert (done.returncode, done.stdout) == (0, "calls True\n"), done.stderr[-3000:]


# The interpreter exits while a daemon thread is inside a guest (or calling
# guests back to back): exit must be clean, not SIGSEGV from freed stores.
EXIT_WHILE_INSIDE = """
import threading, time
import sqlwasm

runtime = sqlwasm.Runtime(trusted_keys=[{pub!r}], timeout_ms=None)
module = runtime.load({loops!r})

def long_call():
    conn = runtime.connect(":memory:", [module])
    conn.execute("SELECT l_forever(0)").fetchall()

def short_calls():
    conn = runtime.connect(":memory:", [module])
    while True:
        conn.execute("SELECT l_spin(20000)").fetchall()

threading.Thread(target={target}, daemon=True).start()
time.sleep(0.3)
print("exiting", flush=True)
"""


@pytest.mark.parametrize("target", ["long_call", "short_calls"])
def test_exit_while_a_daemon_thread_is_in_a_guest(keypair: KeyPair, loops_file: Path, tmp_path: Path, target: str) -> None:
    for _ in range(3):
        done = run_child(EXIT_WHILE_INSIDE.format(pub=str(keypair.pub_path), loops=str(loops_file), target=target), tmp_path)
        assert (done.returncode, done.stdout) == (0, "exiting\n"), done.stderr[-3000:]


# After fork(), the child's time limits and interrupt() must work: the
# watchdog thread did not survive the fork and has to start again there.
FORK_CHILD = """
import os, sys, threading, time
import apsw, sqlwasm

runtime = sqlwasm.Runtime(trusted_keys=[{pub!r}], timeout_ms=300)
conn = runtime.connect(":memory:", [{loops!r}])
assert conn.execute("SELECT l_ok(1)").fetchall() == [(2,)]  # the watchdog runs in the parent
free = sqlwasm.Runtime(trusted_keys=[{pub!r}], timeout_ms=None).connect(":memory:", [{loops!r}])
pid = os.fork()
if pid == 0:
    status = 0
    start = time.monotonic()
    try:
        conn.execute("SELECT l_forever(0)").fetchall()
        status |= 1
    except apsw.SQLError as exc:
        if "time limit of 300 ms exceeded" not in str(exc) or time.monotonic() - start > 3:
            status |= 2
    timer = threading.Timer(0.2, free.interrupt)
    timer.start()
    start = time.monotonic()
    try:
        free.execute("SELECT l_forever(0)").fetchall()
        status |= 4
    except apsw.SQLError as exc:
        if "interrupted" not in str(exc) or time.monotonic() - start > 3:
            status |= 8
    os._exit(status)
deadline = time.monotonic() + 20
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", os.waitstatus_to_exitcode(status), flush=True)
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        print("child hung", flush=True)
        break
    time.sleep(0.05)
print("parent", conn.execute("SELECT l_ok(2)").fetchall(), flush=True)
"""


def test_time_limits_and_interrupt_work_in_a_fork_child(keypair: KeyPair, loops_file: Path, tmp_path: Path) -> None:
    done = run_child(FORK_CHILD.format(pub=str(keypair.pub_path), loops=str(loops_file)), tmp_path)
    assert done.stdout == "child 0\nparent [(3,)]\n", (done.stdout, done.stderr[-3000:])
