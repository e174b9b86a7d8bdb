"""The examples in README.md and docs/*.md are checked: Python blocks run
(they hold their own asserts), TOML blocks are valid manifests. Shell blocks
(```sh, ```sql, indented commands) are not run. Facts the docs repeat from
the code (the command line, export roles, instance policies, the demo's
modules) are checked against the code."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sqlwasm import _cli
from sqlwasm._build import ZIG_FLAGS
from sqlwasm._demo import MODULES as DEMO_MODULES
from sqlwasm._manifest import EXPORT_ROLES, INSTANCE_POLICIES, parse_manifest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[Any]:
    """pytest params (file, n, code) for every fenced block in `language`
    (but the guest SDK pages', which tests/test_sdk_docs.py runs in order,
    each page in one directory: their blocks build on one another)."""
    found = []
    for path in DOCUMENTS:
        if path.name.startswith("sdk-"):
            continue
        n = 0
        for match in FENCE.finditer(path.read_text(encoding="utf-8")):
            if match.group(1).lower() == language:
                n += 1
                line = path.read_text(encoding="utf-8")[: match.start()].count("\n") + 1
                found.append(pytest.param(path, line, match.group(2), id=f"{path.relative_to(REPO)}:{line}"))
    return found


PYTHON_BLOCKS = blocks("python")
TOML_BLOCKS = blocks("toml")


def test_the_readme_has_a_python_example() -> None:
    assert any(param.values[0].name == "README.md" for param in PYTHON_BLOCKS)


def test_fences_are_balanced() -> None:
    for path in DOCUMENTS:
        fences = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, path


@pytest.mark.parametrize("path, line, code", PYTHON_BLOCKS)
def test_python_block_runs(path: Path, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
    for value in namespace.values():  # close what the example opened
        close = getattr(value, "close", None)
        if type(value).__name__ == "Connection" and callable(close):
            close()


@pytest.mark.parametrize("path, line, code", [p for p in PYTHON_BLOCKS if p.values[0].name == "README.md"][:1])
def test_readme_example_as_a_program(path: Path, line: int, code: str, tmp_path: Path) -> None:
    """The README example as a user runs it: a script that must exit 0.
    Started several times at once because a crash on the way out depends on
    timing."""
    script = tmp_path / "example.py"
    script.write_text(code + "\nprint('done')\n", encoding="utf-8")
    procs = [
        subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    results = [(proc.wait(timeout=120), proc.communicate()) for proc in procs]
    for _, (out, err) in results:
        assert out == "done\n", err
    assert [status for status, _ in results] == [0] * len(results)


@pytest.mark.parametrize("path, line, code", TOML_BLOCKS)
def test_toml_block_is_a_valid_manifest(path: Path, line: int, code: str) -> None:
    obj = tomllib.loads(code)
    if "sqlwasm" not in obj:  # a fragment: one or more [[functions]] tables
        obj = {"sqlwasm": 1, "name": "doc", "version": "1.0.0", **obj}
    manifest = parse_manifest(obj, f"{path.name}:{line}")
    assert manifest.functions


# ------------------------------------------------------------ docs/cli.md


def cli_sections() -> dict[str, tuple[str, str]]:
    """docs/cli.md: command -> (its '## sqlwasm ...' heading, its section's text)."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = {}
    for match in re.finditer(r"^## (sqlwasm (\S+)[^\n]*)\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE):
        sections[match.group(2)] = (match.group(1), match.group(3))
    return sections


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in _cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def synopsis(name: str, command: argparse.ArgumentParser) -> str:
    """The heading docs/cli.md must show for a command: positionals (an
    optional one in brackets), then options in the parser's order; optional ones in brackets, a repeatable
    one with '...', mutually exclusive ones as [A | B]."""

    def option(action: argparse.Action) -> str:
        flag = action.option_strings[0]
        return flag if action.nargs == 0 else f"{flag} {action.metavar}"

    def optional(action: argparse.Action) -> str:
        if isinstance(action, argparse._AppendAction):
            return f"{option(action)} [{action.option_strings[0]} ...]" if action.required else f"[{option(action)}]..."
        return option(action) if action.required else f"[{option(action)}]"

    actions = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
    words = [f"[{a.metavar}]" if a.nargs == "?" else str(a.metavar) for a in actions if not a.option_strings]
    exclusive = {a: group for group in command._mutually_exclusive_groups for a in group._group_actions}
    for action in (a for a in actions if a.option_strings):
        group = exclusive.get(action)
        if group is None:
            words.append(optional(action))
        elif action is group._group_actions[0]:
            words.append("[" + " | ".join(option(a) for a in group._group_actions) + "]")
    return " ".join(["sqlwasm", name, *words])


def test_cli_doc_lists_every_command_in_order() -> None:
    assert list(cli_sections()) == list(subcommands())


@pytest.mark.parametrize("name", list(subcommands()))
def test_cli_doc_heading_matches_the_parser(name: str) -> None:
    heading, _ = cli_sections()[name]
    assert heading == synopsis(name, subcommands()[name])


@pytest.mark.parametrize("name", list(subcommands()))
def test_cli_doc_names_every_option_spelling(name: str) -> None:
    """`-o` in a heading stands for `-o`/`--output`: the long spelling must
    be in the section too."""
    heading, body = cli_sections()[name]
    for action in subcommands()[name]._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", heading + body), (name, flag)


def test_cli_doc_names_the_demo_modules() -> None:
    _, body = cli_sections()["demo"]
    named = set(re.findall(r"`(\w+)`", body))
    assert set(DEMO_MODULES) <= named, body


# ------------------------------------------------------------ manifest facts


@pytest.mark.parametrize("doc", ["abi.md", "manifest.md"])
def test_every_export_role_is_documented(doc: str) -> None:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    assert [role for role in EXPORT_ROLES if f"`{role}`" not in text] == []


@pytest.mark.parametrize("doc", ["abi.md", "manifest.md"])
def test_every_instance_policy_is_documented(doc: str) -> None:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    assert "`instance`" in text or 'instance = "' in text
    assert [policy for policy in INSTANCE_POLICIES if not re.search(f"[`\"]{policy}[`\"]", text)] == []


# ------------------------------------------------------------ guest build flags

# Every place outside sqlwasm/_build/ that shows how to compile a guest.
BUILD_COMMAND_PLACES = sorted(
    {
        *DOCUMENTS,
        *(REPO / "extensions").glob("**/README*"),
        *(REPO / "extensions" / "sdk").glob("*.h"),
        *(REPO / "extensions").glob("*/*.c"),
        *(REPO / "benchmarks").glob("**/*.[ch]"),
        *(REPO / "benchmarks").glob("**/*.md"),
        *(REPO / "tools").glob("**/*"),
    }
)


def shown_commands(text: str) -> str:
    """The text with comment markers, line continuations and runs of blanks
    folded away, so a command wrapped over lines reads as one."""
    lines = [re.sub(r"^\s*(\*|//|#)?", "", line).rstrip().removesuffix("\\") for line in text.splitlines()]
    return re.sub(r"\s+", " ", " ".join(lines))


def test_build_flags_are_shown_in_the_sdk_header_and_the_cli_doc() -> None:
    flags = " ".join(ZIG_FLAGS)
    for path in (REPO / "extensions" / "sdk" / "sqlwasm.h", REPO / "docs" / "cli.md"):
        assert flags in shown_commands(path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize("path", [p for p in BUILD_COMMAND_PLACES if p.is_file()], ids=lambda p: str(p.relative_to(REPO)))
def test_every_shown_build_command_uses_the_build_flags(path: Path) -> None:
    """A command that starts like the real one (`ziglang cc`, `-target
    wasm32-...`) must go on with exactly sqlwasm._build.ZIG_FLAGS (sqlwasm/_build/_c.py)."""
    text = shown_commands(path.read_text(encoding="utf-8"))
    flags = " ".join(ZIG_FLAGS)
    for match in re.finditer(r"ziglang cc (?=-)|-target wasm32", text):
        start = match.end() if match.group().startswith("ziglang") else match.start()
        assert text[start:].startswith(flags), f"{path}: {text[match.start() : match.start() + 120]!r}"
