"""The compiled-module cache: engine-compiled code kept on disk, so that a
new process loads a module it has loaded before without compiling it.

Compiled code is trusted code (the engine maps it executable without
validating it again), so this module guards what it hands back:

- Runtime verifies a module's signature and parses its manifest before it
  asks the cache anything; the key is the module's sha256, the cache format
  and the engine's cache tag (engine version, every setting, the machine).
- The directory must be private: owned by this user, not writable by group
  or others, and every directory above it owned by this user or root and
  not writable by others unless sticky (/tmp). Otherwise the cache is
  unusable: a warning is logged once and modules are compiled.
- An entry is a header (magic, format, the key, the payload's length and
  SHA-256) and the payload. One whose header or hash does not match is a
  miss, never passed to the engine; the caller compiles and rewrites it.
- Entries are written to a temporary file in the same directory and renamed
  into place (os.replace), so a reader sees a whole entry or none.

Nothing here knows about a particular engine: the engine seam serializes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import struct
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

log = logging.getLogger("sqlwasm")

ENV_VAR = "SQLWASM_CACHE_DIR"  # a directory, or empty for no cache
FORMAT = 1
MAGIC = b"SQLWASM\x00CACHE\x00\x00\x00"  # 16 bytes
# magic, format, key (32), payload length, payload SHA-256 (32)
HEADER = struct.Struct("<16sI32sQ32s")
SUFFIX = ".compiled"
TEMP_PREFIX = ".tmp-"

StrPath = Union[str, "os.PathLike[str]"]


class _UserCache:
    """The default of Runtime(cache_dir=...): the user's cache directory."""

    def __repr__(self) -> str:
        return "USER_CACHE"


USER_CACHE = _UserCache()
CacheDir = Union[StrPath, None, _UserCache]


def user_cache_dir() -> Path | None:
    """Where sqlwasm caches by default: $SQLWASM_CACHE_DIR if set (empty:
    nowhere), else the platform's per-user cache directory."""
    configured = os.environ.get(ENV_VAR)
    if configured is not None:
        return Path(configured) if configured else None
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) / "sqlwasm" / "Cache" if base else None
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sqlwasm"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG: a relative $XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "sqlwasm"


def resolve(cache_dir: CacheDir) -> Path | None:
    if isinstance(cache_dir, _UserCache):
        return user_cache_dir()
    return None if cache_dir is None else Path(os.fspath(cache_dir))


def cache_key(module_sha256: str, engine_tag: str) -> bytes:
    """What names an entry: change anything that changes the compiled code's
    meaning and the key changes."""
    return hashlib.sha256(f"sqlwasm-cache/{FORMAT}\n{module_sha256}\n{engine_tag}".encode()).digest()


@dataclass(frozen=True)
class Usability:
    usable: bool
    reason: str  # why not, or "" when usable


@dataclass(frozen=True)
class Summary:
    directory: Path
    exists: bool
    usable: bool
    reason: str
    entries: int
    bytes: int


_warned: set[tuple[Path, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(directory: Path, message: str) -> None:
    with _warned_lock:
        if (directory, message) in _warned:
            return
        _warned.add((directory, message))
    log.warning("sqlwasm: compiled-module cache %s not used: %s; compiling instead", directory, message)


def _is_private_dir(info: os.stat_result) -> str:
    """Why a directory sqlwasm caches in is not private ("" if it is)."""
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by this user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return ""


def _unsafe_ancestor(directory: Path) -> str:
    """Why a directory above the cache lets someone else replace it ("" if none does)."""
    if not hasattr(os, "geteuid"):
        return ""
    for parent in directory.parents:
        try:
            info = os.stat(parent)
        except FileNotFoundError:  # made on first use, private
            continue
        if info.st_uid not in (os.geteuid(), 0):
            return f"{parent} is owned by uid {info.st_uid}"
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable_by_others and not info.st_mode & stat.S_ISVTX:
            return f"{parent} is writable by group or others and not sticky (mode {stat.S_IMODE(info.st_mode):o})"
    return ""


def _create(directory: Path) -> None:
    """Creates directory and any missing parents, each mode 0700 (os.makedirs
    gives only the last one its mode)."""
    missing = []
    for path in (directory, *directory.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it: checked like any existing directory


def check(directory: Path, *, create: bool) -> Usability:
    """Whether directory may hold compiled code (making it first if create)."""
    directory = directory.absolute()
    try:
        if create:
            _create(directory)
        info = os.stat(directory)
    except FileNotFoundError:  # made on first use: the directories above it decide
        info = None
    except OSError as exc:
        return Usability(False, f"cannot use it: {exc.strerror}")
    reason = _is_private_dir(info) if info is not None else ""
    if not reason:
        try:
            reason = _unsafe_ancestor(directory)
        except OSError as exc:
            reason = f"cannot check the directories above it: {exc.strerror}"
    return Usability(not reason, reason)


class DiskCache:
    """Compiled modules in one directory. A failing cache never fails a
    load: it warns (once per directory and cause) and the caller compiles.

    The counters (lookups, hits, stores) say what happened, for tests and
    `sqlwasm cache info`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.absolute()
        self.lookups = 0
        self.hits = 0
        self.stores = 0
        self._counters = threading.Lock()

    def _usable(self) -> bool:
        usability = check(self.directory, create=True)
        if not usability.usable:
            _warn_once(self.directory, usability.reason)
        return usability.usable

    def _path(self, key: bytes) -> Path:
        return self.directory / (key.hex() + SUFFIX)

    def get(self, key: bytes) -> bytes | None:
        """The payload stored under key, checked whole; None if there is none
        or it is damaged, not ours, or the directory is not private."""
        with self._counters:
            self.lookups += 1
        if not self._usable():
            return None
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            _warn_once(self.directory, f"cannot read {path.name}: {exc.strerror}")
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or (hasattr(os, "geteuid") and info.st_uid != os.geteuid()):
                _warn_once(self.directory, f"{path.name} is not a file this user wrote")
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                entry = file.read()
        except OSError as exc:
            _warn_once(self.directory, f"cannot read {path.name}: {exc.strerror}")
            return None
        finally:
            os.close(fd)
        payload = _payload(entry, key)
        if payload is not None:
            with self._counters:
                self.hits += 1
        return payload

    def put(self, key: bytes, payload: bytes) -> None:
        """Stores payload under key atomically (a reader sees the old entry,
        the new one, or none; never part of one)."""
        if not self._usable():
            return
        entry = HEADER.pack(MAGIC, FORMAT, key, len(payload), hashlib.sha256(payload).digest()) + payload
        try:
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=TEMP_PREFIX, suffix=SUFFIX)  # mode 0600
        except OSError as exc:
            _warn_once(self.directory, f"cannot write to it: {exc.strerror}")
            return
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(entry)
            os.replace(temp, self._path(key))
        except OSError as exc:
            _warn_once(self.directory, f"cannot write to it: {exc.strerror}")
            try:
                os.unlink(temp)
            except OSError:
                pass
            return
        with self._counters:
            self.stores += 1


def _payload(entry: bytes, key: bytes) -> bytes | None:
    """entry's payload if its header is this format's, names key, and the
    payload is whole and hashes to what the header says."""
    if len(entry) < HEADER.size:
        return None
    magic, version, stored_key, length, digest = HEADER.unpack_from(entry)
    payload = entry[HEADER.size :]
    if magic != MAGIC or version != FORMAT or stored_key != key or length != len(payload):
        return None
    if hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def _entries(directory: Path) -> list[Path]:
    """The files in directory that sqlwasm wrote (entries and leftover temporary files)."""
    try:
        return [path for path in directory.iterdir() if path.name.endswith(SUFFIX) and path.is_file()]
    except FileNotFoundError:
        return []


def summary(directory: Path) -> Summary:
    usability = check(directory, create=False)
    entries = [path for path in _entries(directory) if not path.name.startswith(TEMP_PREFIX)]
    total = 0
    for path in entries:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return Summary(directory.absolute(), directory.is_dir(), usability.usable, usability.reason, len(entries), total)


def toolchains(directory: Path) -> dict[str, int]:
    """The guest toolchains kept in directory, by name, with their sizes in
    bytes: every subdirectory is one (the AssemblyScript compiler, the
    JavaScript engine's objects); compiled modules are the files beside them."""
    found: dict[str, int] = {}
    try:
        subdirectories = sorted(path for path in directory.iterdir() if path.is_dir() and not path.is_symlink())
    except FileNotFoundError:
        return found
    for subdirectory in subdirectories:
        total = 0
        for path in subdirectory.rglob("*"):
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
        found[subdirectory.name] = total
    return found


def clear(directory: Path, *, with_toolchains: bool = False) -> tuple[int, int]:
    """Removes every compiled module sqlwasm wrote in directory and, with
    with_toolchains, the toolchains too: (files or toolchains, bytes) removed."""
    removed = freed = 0
    for path in _entries(directory):
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        freed += size
    if with_toolchains:
        for name, size in toolchains(directory).items():
            shutil.rmtree(directory / name, ignore_errors=True)
            removed += 1
            freed += size
    return removed, freed


# POSIX flock; where there is none, the atomic rename alone keeps entries whole.
CAN_LOCK = sys.platform != "win32"


@contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on lock_path (a file in the cache directory,
    made if absent) while a toolchain is built or installed there: one
    process does it, the others wait. Where there are no POSIX locks, builds
    may race, and the atomic rename of their results keeps entries whole."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if CAN_LOCK:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
