"""Plain-text tables of query results, for the CLI and the demo."""

from __future__ import annotations

from typing import Any, Sequence


def printable(text: str) -> str:
    """text on one line with its control and format characters escaped
    (\\n, \\x1b, \\u202e, ...): text from a module or a guest is shown, never
    obeyed by the terminal, and cannot forge lines of output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def cell_text(value: Any) -> Any:
    """A value as the CLI shows it: blobs as hex, everything else as is."""
    return value.hex() if isinstance(value, bytes) else value


def format_table(
    names: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "", rule: bool = True, null: str = "NULL"
) -> str:
    """Left-aligned columns under a header; `null` for None; control
    characters escaped, so that every row is one line."""
    if not names:
        return ""
    names = [printable(n) for n in names]
    text = [[null if v is None else printable(str(cell_text(v))) for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in text]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths))]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in text]
    return "\n".join(indent + line.rstrip() for line in lines)
