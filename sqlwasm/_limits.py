"""Resource limits: defaults, and the stricter of the host's and the module's."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

# Each is per SQL function call, except memory_pages (per instance).
DEFAULT_TIMEOUT_MS = 5_000
DEFAULT_MEMORY_PAGES = 4_096  # 256 MiB of linear memory
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_MEMORY_PAGES = 65_536  # the whole 4 GiB wasm32 address space
WASM_PAGE = 65_536
# Table elements per instance, across all its tables (function pointers of a
# C program: thousands, not more). Checked at load; table.grow past it fails,
# like memory.grow past memory_pages.
MAX_TABLE_ELEMENTS = 100_000

# The largest value of each limit the host can carry, for the Runtime's
# limits and a manifest's alike. The native layer holds fuel in a uint64 and
# timeout_ms and max_result_bytes in uint32s; it rounds timeout_ms up to
# 10 ms ticks and SQLite takes result lengths as int, hence 2**31 - 1.
HOST_MAXIMA = {
    "timeout_ms": 2**31 - 1,
    "fuel": 2**64 - 1,
    "memory_pages": MAX_MEMORY_PAGES,
    "max_result_bytes": 2**31 - 1,
}


def limit_problem(value: object, name: str) -> str | None:
    """What is wrong with value as the limit `name` (to follow its name in a
    message), or None if the host can enforce it."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        shown = repr(value) if isinstance(value, (int, float)) else type(value).__name__
        return f"must be a positive integer, got {shown}"
    if value > HOST_MAXIMA[name]:
        return f"is {value}, at most {HOST_MAXIMA[name]}"
    return None


@dataclass(frozen=True)
class Limits:
    """None means unlimited (fuel: not metered)."""

    timeout_ms: int | None = DEFAULT_TIMEOUT_MS
    fuel: int | None = None
    memory_pages: int | None = DEFAULT_MEMORY_PAGES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name != "max_result_bytes":
                continue  # unlimited
            problem = limit_problem(value, f.name)
            if problem is not None:
                raise ValueError(f"{f.name} {problem}")

    def tightened_by(self, declared: Mapping[str, int]) -> "Limits":
        """These limits with the module's declared ones applied: the stricter wins."""
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), declared.get(f.name)
            values[f.name] = theirs if mine is None else mine if theirs is None else min(mine, theirs)
        return Limits(**values)
