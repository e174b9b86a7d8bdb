"""A long query's progress on the terminal: elapsed time and rows so far."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """While entered and `enabled`, shows `elapsed, rows so far` on stream,
    from `delay` seconds on, every `interval` seconds. On a terminal it is
    one line, rewritten in place and cleared at the end; elsewhere (asked
    for with --progress) one line each time."""

    def __init__(
        self, stream: TextIO, enabled: bool, *, count_rows: bool = True, delay: float = 1.0, interval: float = 0.25
    ) -> None:
        self.rows = 0  # the query's fetch loop counts here; the thread only reads it
        self._count_rows = count_rows
        self._stream = stream
        self._enabled = enabled
        self._delay = delay
        self._interval = interval
        self._terminal = stream.isatty()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    def __enter__(self) -> Progress:
        if self._enabled:
            self._thread = threading.Thread(target=self._show, name="sqlwasm-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops showing progress (before other output; again is harmless)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._shown and self._terminal:
            self._stream.write("\r\x1b[K")  # the rows or the error take its place
            self._stream.flush()
            self._shown = False

    def _show(self) -> None:
        started = time.monotonic()
        if self._done.wait(self._delay):
            return
        while not self._done.is_set():
            elapsed = f"{time.monotonic() - started:.1f} s"
            text = f"{elapsed}, {self.rows:,} rows so far" if self._count_rows else f"{elapsed} so far"
            self._stream.write(f"\r{text}\x1b[K" if self._terminal else f"progress: {text}\n")
            self._stream.flush()
            self._shown = True
            self._done.wait(self._interval)
