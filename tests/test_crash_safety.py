"""Crash safety: a process killed with SIGKILL while a transaction that calls
guests is open leaves a database that passes PRAGMA integrity_check, holds
every committed row and nothing of the open transaction (rollback journal
and WAL).

A child interpreter commits batches of rows whose INSERTs call the shipped
geo module and reports each commit on stdout. In the first test it then
opens one more transaction, writes enough through the guests that SQLite
spills uncommitted pages to disk, says so, and keeps inserting (never
committing) until the parent kills it. In the second it commits without
pause and is killed at random moments, again and again on one database.
"""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import apsw
import pytest
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm

COMMITS = 5
ROWS = 2_000  # rows one INSERT writes; a committed batch is two of them
TIMEOUT = 60
TESTS = Path(__file__).resolve().parent

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS t("
    "batch INTEGER, i INTEGER, lat REAL, lon REAL, km REAL, hash TEXT, pad BLOB, PRIMARY KEY (batch, i))"
)
# Rows first .. first + ROWS - 1 of a batch, on a grid over the globe; the
# guests compute each row's distance to London and its geohash.
INSERT = f"""
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :first + {ROWS} - 1),
  p(i, lat, lon) AS (SELECT i, (i * 7 + :batch) % 179 - 89.5, (i * 13 + :batch) % 359 - 179.5 FROM n)
INSERT INTO t SELECT :batch, i, lat, lon, geo_haversine(lat, lon, 51.5, -0.12), geo_geohash_encode(lat, lon, 9),
  zeroblob(300) FROM p
"""


def connect(path: Path) -> apsw.Connection:
    return sqlwasm.connect(str(path), [module_path("geo")], trusted_keys=[EXAMPLES_PUBLIC_KEY])


def batches_present(conn: apsw.Connection) -> int:
    """Batches are numbered from 0: one past the highest in the table."""
    count = conn.execute("SELECT coalesce(max(batch) + 1, 0) FROM main.t").fetchall()[0][0]
    assert isinstance(count, int)
    return count


def written_file(path: Path, journal_mode: str) -> Path:
    """The file a transaction's pages go to before it commits."""
    return path.with_name(path.name + "-wal") if journal_mode == "wal" else path


# --------------------------------------------------------------- the child


def child_main(path_text: str, journal_mode: str, open_after: int) -> None:
    """Commits batches from the next free batch number on, printing
    `committed <batch> <bytes on disk>` after each. After open_after commits
    (never if it is negative) it opens one more, prints `open <batch>
    <bytes>` once that transaction's pages are on disk, and inserts into it
    until killed."""
    path = Path(path_text)
    conn = connect(path)
    assert conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchall() == [(journal_mode,)]
    # A small cache makes SQLite spill uncommitted pages to disk mid-transaction;
    # no automatic checkpoints keeps the WAL's size a measure of what was written.
    conn.execute("PRAGMA cache_size=16; PRAGMA wal_autocheckpoint=0")
    conn.execute(SCHEMA)
    on_disk = written_file(path, journal_mode)
    batch = batches_present(conn)
    while True:
        conn.execute("BEGIN")
        conn.execute(INSERT, {"batch": batch, "first": 0})
        if open_after == 0:
            break
        conn.execute(INSERT, {"batch": batch, "first": ROWS})
        conn.execute("COMMIT")
        print("committed", batch, on_disk.stat().st_size, flush=True)
        batch += 1
        open_after -= 1
    print("open", batch, on_disk.stat().st_size, flush=True)
    first = ROWS
    while True:  # until SIGKILL: guests run inside the open transaction
        conn.execute(INSERT, {"batch": batch, "first": first})
        first += ROWS


# --------------------------------------------------------------- the tests


class Child:
    """child_main in a child interpreter; its stdout lines are read on a
    thread so the test can wait for them with a timeout."""

    def __init__(self, path: Path, journal_mode: str, open_after: int) -> None:
        code = (
            f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_crash_safety as t; "
            "t.child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(path), journal_mode, str(open_after)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=path.parent,  # outside the checkout (as in test_limits), so sqlwasm is the installed one
        )
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self) -> tuple[str, int, int]:
        """(what, batch, bytes on disk) of the next line."""
        line = self.lines.get(timeout=TIMEOUT)
        if line is None:
            returncode = self.process.wait()
            assert self.process.stderr is not None
            raise AssertionError(f"the child ended early ({returncode}): {self.process.stderr.read()[-3000:]}")
        what, batch, size = line.split()
        return what, int(batch), int(size)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=TIMEOUT) == -signal.SIGKILL

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def expected_batch(conn: apsw.Connection, batch: int) -> list[tuple[object, ...]]:
    """The rows the child commits for batch, computed here by SQLite and the
    same guest into a scratch table."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS expected(batch, i, lat, lon, km, hash, pad); DELETE FROM expected")
    for first in (0, ROWS):
        conn.execute(INSERT.replace("INSERT INTO t", "INSERT INTO expected"), {"batch": batch, "first": first})
    rows: list[tuple[object, ...]] = conn.execute("SELECT * FROM expected ORDER BY i").fetchall()
    return rows


def check_recovered(path: Path, journal_mode: str, committed: range) -> None:
    """The database after a kill: intact, exactly the committed batches,
    each with exactly the rows the guests computed for it."""
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [(journal_mode,)]
        counts = conn.execute("SELECT batch, count(*) FROM main.t GROUP BY batch ORDER BY batch").fetchall()
        assert counts == [(batch, 2 * ROWS) for batch in committed]
        for batch in committed:
            rows = conn.execute("SELECT * FROM main.t WHERE batch = ? ORDER BY i", (batch,)).fetchall()
            assert rows == expected_batch(conn, batch), batch
    finally:
        conn.close()


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sigkill_in_an_open_transaction_that_calls_guests(tmp_path: Path, journal_mode: str) -> None:
    path = tmp_path / "crash.db"
    sizes: list[int] = []
    with Child(path, journal_mode, open_after=COMMITS) as child:
        for expected in range(COMMITS):
            what, batch, size = child.next_line()
            assert (what, batch) == ("committed", expected)
            sizes.append(size)
        what, batch, open_size = child.next_line()
        assert (what, batch) == ("open", COMMITS)
        child.kill()
    # the open transaction's pages had reached the disk, so recovery has work to do
    assert open_size > sizes[-1], (open_size, sizes)
    journal = path.with_name(path.name + "-journal")
    if journal_mode == "delete":
        assert journal.stat().st_size > 0  # the hot journal the kill left
    else:
        assert written_file(path, "wal").stat().st_size >= open_size  # frames no commit covers

    check_recovered(path, journal_mode, range(COMMITS))
    assert not journal.exists()  # rolled back
    # the database takes new transactions that call guests
    conn = connect(path)
    try:
        conn.execute(INSERT, {"batch": COMMITS, "first": 0})
        assert conn.execute("SELECT count(*) FROM t WHERE km = geo_haversine(lat, lon, 51.5, -0.12)").fetchall() == [
            ((COMMITS * 2 + 1) * ROWS,)
        ]
    finally:
        conn.close()


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sigkill_at_random_moments(tmp_path: Path, journal_mode: str) -> None:
    """Killed at a random moment (in an INSERT that runs guests, in COMMIT,
    between transactions) five times over: every reported commit survives,
    and a batch is there whole or not at all."""
    path = tmp_path / "crash.db"
    chance = random.Random(f"{journal_mode}-kills")
    reported = 0  # batches the children said they committed
    present = 0
    for _ in range(5):
        with Child(path, journal_mode, open_after=-1) as child:
            what, batch, _ = child.next_line()
            assert (what, batch) == ("committed", present)
            reported = batch + 1
            time.sleep(chance.uniform(0, 0.05))
            child.kill()
            while (line := child.lines.get(timeout=TIMEOUT)) is not None:  # commits reported before the kill
                if line.endswith("\n"):  # a line the kill cut short was not reported
                    reported = int(line.split()[1]) + 1
        conn = connect(path)
        try:
            present = batches_present(conn)
        finally:
            conn.close()
        # a commit the child made but had no time to report is fine; one it reported must be there
        assert reported <= present <= reported + 1, (reported, present)
        check_recovered(path, journal_mode, range(present))
