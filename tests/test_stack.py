"""Native stack (native/: the stack check before every guest call).

wasmtime gives wasm frames max_wasm_stack below the point where a guest is
entered, however deep the host already is there. When the host is deep (SQL
calling Python calling SQL, on a small thread stack), a recursing guest, or a
guest calling a host function at the bottom of its recursion, must fail its
statement cleanly instead of running off the end of the thread's stack.
Everything runs in child processes: a stack overflow there is a signal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MEMORY, KeyPair, fn, manifest, wasm_module
from test_limits import LOOPS_WAT, loops_manifest

from sqlwasm import _native

# Recurses n levels, then calls the log host function at the bottom.
DEEP_LOG_WAT = '(import "sqlwasm" "log" (func $log (param i32 i32 i32)))' + MEMORY + """
  (data (i32.const 0) "bottom")
  (func $deep (export "deep") (param $n i64) (result i64)
    (if (result i64) (i64.eqz (local.get $n))
      (then (call $log (i32.const 2) (i32.const 0) (i32.const 6)) (i64.const 0))
      (else (i64.add (call $deep (i64.sub (local.get $n) (i64.const 1))) (i64.const 1)))))
"""

NESTED = """
import io, json, logging, sys, threading
import apsw, sqlwasm

runtime = sqlwasm.Runtime(trusted_keys=[{pub!r}], grant=["log"])
conn = runtime.connect(":memory:", [{loops!r}, {deep!r}])
handler = logging.StreamHandler(io.StringIO())
handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
logging.getLogger("sqlwasm.guest.r").addHandler(handler)
logging.getLogger("sqlwasm.guest.r").setLevel(logging.DEBUG)

def nest(level, sql):
    if level == 0:
        return conn.execute(sql).fetchall()[0][0]
    return conn.execute("SELECT py_nest(?, ?)", (level - 1, sql)).fetchall()[0][0]

conn.create_scalar_function("py_nest", nest)
outcomes = {{}}

def classify(sql, level):
    try:
        nest(level, sql)
        return "ok"
    except apsw.SQLError as exc:
        text = str(exc)
        if "not enough native stack" in text:
            return "refused"
        if "stack overflow" in text:
            return "trapped"
        return text

def run():
    for level in {levels}:
        outcomes[level] = [classify(sql, level) for sql in {queries}]

threading.stack_size({stack})
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(json.dumps(outcomes), flush=True)
"""


@pytest.fixture
def modules(keypair: KeyPair, tmp_path: Path) -> tuple[Path, Path]:
    loops, deep = tmp_path / "l.wasm", tmp_path / "r.wasm"
    loops.write_bytes(wasm_module(LOOPS_WAT, loops_manifest(), key=keypair.private))
    deep.write_bytes(
        wasm_module(DEEP_LOG_WAT, manifest(fn("r_deep", export="deep"), name="r", capabilities=["log"]), key=keypair.private)
    )
    return loops, deep


def run_nested(keypair: KeyPair, modules: tuple[Path, Path], tmp_path: Path, stack: int, levels: list[int], queries: list[str]) -> dict[str, list[str]]:
    script = NESTED.format(
        pub=str(keypair.pub_path), loops=str(modules[0]), deep=str(modules[1]), stack=stack, levels=levels, queries=queries
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-3000:])
    outcomes: dict[str, list[str]] = json.loads(done.stdout)
    return outcomes


@pytest.mark.parametrize("stack", [256 * 1024, 512 * 1024], ids=["256K", "512K"])
def test_recursing_guest_below_nested_host_calls(keypair: KeyPair, modules: tuple[Path, Path], tmp_path: Path, stack: int) -> None:
    """SQL -> Python -> SQL nested deeper and deeper, then a guest that
    recurses forever: each is a trap or a refusal, never a signal."""
    # Beyond these depths SQL -> Python -> SQL overflows the thread by itself,
    # with no guest involved (measured: ~180 levels on 256K, ~360 on 512K).
    levels = list(range(0, 121, 10)) if stack == 256 * 1024 else list(range(0, 301, 30))
    outcomes = run_nested(keypair, modules, tmp_path, stack, levels, ["SELECT l_down(0)"])
    assert set(outcome for results in outcomes.values() for outcome in results) <= {"trapped", "refused"}, outcomes
    assert outcomes["0"] == ["trapped"]  # with room to spare the guest runs (and traps)
    assert outcomes[str(levels[-1])] == ["refused"]  # deep down it is refused before it starts


def test_host_function_at_the_bottom_of_a_recursion(keypair: KeyPair, modules: tuple[Path, Path], tmp_path: Path) -> None:
    """The guest recurses close to its wasm stack limit and then calls the log
    host function (Python frames): its reserve must cover them."""
    queries = [f"SELECT r_deep({n})" for n in (500, 1000, 2000, 3000, 4000, 6000, 100000)]
    outcomes = run_nested(keypair, modules, tmp_path, 256 * 1024, list(range(0, 121, 20)), queries)
    assert set(outcome for results in outcomes.values() for outcome in results) <= {"ok", "trapped", "refused"}, outcomes
    assert outcomes["0"][0] == "ok" and outcomes["0"][-1] == "trapped", outcomes


def test_stack_left_is_measured_on_this_thread() -> None:
    left = _native.stack_left()
    assert 0 < left <= 64 * 1024 * 1024
