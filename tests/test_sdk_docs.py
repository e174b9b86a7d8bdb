"""The guest SDK pages, docs/sdk-*.md, run as their reader would run them.

Convention (every page, every language):
- a fenced block whose info string is `<lang> file=NAME` (```c file=add.c)
  is written to NAME;
- a block ```sh run is run with bash -e, ```python run with python;
- other blocks are only shown.
Blocks run in order in one fresh directory per page (outside the checkout),
where `sqlwasm` is on PATH and a signing key publisher.key, with its
publisher.pub, already exists. A page must have at least one run block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from sqlwasm._signing import generate_keypair

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("sdk-*.md"))
RUNNERS = {"sh": ["bash", "-e"], "python": [sys.executable]}
BLOCK_TIMEOUT_SECONDS = 600  # a first toolchain download (npm, zig's libc) is slow


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    file: str | None  # file=NAME
    run: bool
    text: str


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, with their info strings parsed."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening.group("indent"), opening.group("fence"), opening.group("info").strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if closing and closing.group("fence").startswith(fence) and not closing.group("info").strip():
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            raise AssertionError(f"{page.name}:{i + 1}: the block opened here is never closed")
        words = info.split()
        attrs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        flags = {w for w in words[1:] if "=" not in w}
        found.append(Block(i + 1, words[0] if words else "", attrs.get("file"), "run" in flags, "\n".join(body) + "\n"))
        i = j + 1
    return found


def checked(page: Path, block: Block) -> None:
    where = f"{page.name}:{block.line}"
    assert not (block.run and block.file), f"{where}: a block is either run or written to a file, not both"
    if block.run:
        assert block.lang in RUNNERS, f"{where}: cannot run a '{block.lang}' block (only {', '.join(RUNNERS)})"
    if block.file is not None:
        name = PurePosixPath(block.file)
        assert not name.is_absolute() and ".." not in name.parts, f"{where}: file={block.file} must stay in the page's directory"


def page_environment() -> dict[str, str]:
    env = dict(os.environ)
    scripts = sysconfig.get_path("scripts")  # where pip put the sqlwasm command
    env["PATH"] = os.pathsep.join([scripts, str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    return env


def test_the_convention_is_parsed(tmp_path: Path) -> None:
    page = tmp_path / "sdk-x.md"
    page.write_text(
        "Text\n\n```c file=add.c\nint x;\n```\n\n- a list\n\n  ```sh run\n  echo hi\n  ```\n\n"
        "```python\nshown only\n```\n````md\n```c file=inner.c\n```\n````\n"
    )
    assert [(b.line, b.lang, b.file, b.run, b.text) for b in blocks(page)] == [
        (3, "c", "add.c", False, "int x;\n"),
        (9, "sh", None, True, "echo hi\n"),
        (13, "python", None, False, "shown only\n"),
        (16, "md", None, False, "```c file=inner.c\n```\n"),
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_sdk_page_runs(page: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    page_blocks = blocks(page)
    for block in page_blocks:
        checked(page, block)
    assert any(b.run for b in page_blocks), f"{page.name} has no ```sh run or ```python run block"
    workdir = tmp_path_factory.mktemp(page.stem)
    generate_keypair("publisher", workdir)
    env = page_environment()
    started = time.monotonic()
    for block in page_blocks:
        if block.file is not None:
            target = workdir / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
        elif block.run:
            result = subprocess.run(
                [*RUNNERS[block.lang], "-"], input=block.text, cwd=workdir, env=env, capture_output=True,
                text=True, timeout=BLOCK_TIMEOUT_SECONDS,
            )
            assert result.returncode == 0, (
                f"{page.name}:{block.line}: the ```{block.lang} run block exited with {result.returncode}\n"
                f"--- block\n{block.text}--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
            )
    print(f"{page.name}: {time.monotonic() - started:.1f} s")
