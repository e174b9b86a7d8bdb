"""Ctrl-C for the command line: stops the running statement at once.

While SQLite runs a statement (and the guests it calls) the main thread is
in C without the GIL, so Python's own SIGINT handler, which runs between
bytecodes, would wait for the statement to end. Here the C-level handler's
wakeup byte reaches a thread that calls the connection's interrupt() at
once; the statement then fails with SQLite's interrupt error.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, Iterator, Protocol


class Interruptible(Protocol):
    def interrupt(self) -> None: ...


class CtrlC:
    """While entered, Ctrl-C during `statement(conn)` interrupts conn (and
    sets `fired`); anywhere else it raises KeyboardInterrupt, as usual."""

    def __init__(self) -> None:
        self.fired = False
        self._conn: Interruptible | None = None
        # Ctrl-Cs the watcher turned into interrupts that Python's handler has
        # not seen yet: that handler may run only after the statement ended.
        self._unseen = 0
        self._lock = threading.RLock()  # the watcher never interrupts a connection after its statement
        self._pipe: tuple[int, int] | None = None
        self._previous_handler: Any = None
        self._previous_wakeup_fd = -1

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread gets signals (and may set their handlers)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="sqlwasm-ctrl-c", daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pipe is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        signal.signal(signal.SIGINT, self._previous_handler)
        os.close(self._pipe[1])  # the watcher reads end-of-file and stops; it closes its end

    def _watch(self, read_fd: int) -> None:
        try:
            while data := os.read(read_fd, 64):
                if signal.SIGINT in data:
                    with self._lock:
                        if self._conn is not None:
                            self.fired = True
                            self._unseen += 1
                            self._conn.interrupt()
        finally:
            os.close(read_fd)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        # During a statement the watcher interrupts it: its error ends it.
        with self._lock:
            if self._conn is not None:
                return
            if self._unseen:
                self._unseen = 0
                return
        raise KeyboardInterrupt

    @contextmanager
    def statement(self, conn: Interruptible) -> Iterator[None]:
        """Ctrl-C inside this block interrupts conn."""
        with self._lock:
            self.fired = False
            self._unseen = 0
            self._conn = conn
        try:
            yield
        finally:
            with self._lock:
                self._conn = None
