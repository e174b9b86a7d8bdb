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
# Elements per table (function pointers of a C program: thousands, not more);
# table.grow past it fails, like memory.grow past memory_pages.
MAX_TABLE_ELEMENTS = 100_000


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
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{f.name} must be a positive integer or None, got {value!r}")
        if self.memory_pages is not None and self.memory_pages > MAX_MEMORY_PAGES:
            raise ValueError(f"memory_pages is at most {MAX_MEMORY_PAGES}")
        if self.max_result_bytes > 0x7FFFFFFF:
            raise ValueError("max_result_bytes is at most 2**31 - 1")
        if self.timeout_ms is not None and self.timeout_ms > 0xFFFFFFFF // 2:
            raise ValueError("timeout_ms is too large")

    def tightened_by(self, declared: Mapping[str, int]) -> "Limits":
        """These limits with the module's declared ones applied: the stricter wins."""
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), declared.get(f.name)
            values[f.name] = theirs if mine is None else mine if theirs is None else min(mine, theirs)
        return Limits(**values)
