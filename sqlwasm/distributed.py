"""One query over many SQLite shards on Dask: map_sql on every shard, on the
workers, then reduce_sql over their rows on the caller, with the same signed
modules on both sides.

    from sqlwasm import distributed
    rows = distributed.query(
        "data/*.db",
        "SELECT country, stats_median_partial(pm25) AS p FROM readings GROUP BY country",
        "SELECT country, stats_median_merge(p) FROM map GROUP BY country",
        modules=["stats.wasm"], trusted_keys=["publisher.pub"])

Dask is optional (``pip install 'sqlwasm[dask]'``) and imported only here,
when a query runs. docs/distributed.md says what runs where and what is trusted.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import inspect
import logging
import os
import stat
import sys
import threading
import uuid
from collections import OrderedDict
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, NamedTuple, Sequence, Union, overload

import apsw

from ._errors import Error
from ._guest_sql import ascii_lower
from ._runtime import Grant, Module, Runtime, parse_grant
from ._signing import _ONE_KEY, PUBLIC_KEY_TAG, TrustedKey, load_public_key, parse_public_key_text

if TYPE_CHECKING:
    from dask.distributed import Client

# The rest (the task function, grouping, the per-process module cache) is
# public for tests, benchmarks and the CLI, but not the API.
__all__ = ["ReduceError", "ShardError", "WorkerLostError", "query", "query_with_columns"]

SQLValue = Union[None, int, float, str, bytes]
Row = tuple[SQLValue, ...]
Shards = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]
ModuleFile = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

# Grouping: Dask costs 0.2-1 ms per task, so tiny shards share a task; a few
# tasks per worker thread keep the threads busy when shards differ in cost,
# and a task holds at least MIN_TASK_BYTES of shards when there are enough.
TASKS_PER_THREAD = 4
MIN_TASK_BYTES = 8 << 20
# What **runtime_options may hold: Runtime's limits and policies (the keys,
# allow_unsigned and grant have their own parameters).
RUNTIME_OPTIONS = tuple(
    name for name in inspect.signature(Runtime).parameters if name not in ("trusted_keys", "allow_unsigned", "grant")
)
# Module sets a process keeps verified and compiled (the least recently used goes first).
MODULE_SETS_KEPT = 8


class ShardError(Error):
    """map_sql failed on a shard (or the shard could not be opened): the
    shard's path and SQLite's or the guest's message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"shard {path}: {message}")
        self.path = path
        self.message = message

    def __reduce__(self) -> tuple[type[ShardError], tuple[str, str]]:
        # Dask pickles a worker's exception to raise it on the caller.
        return ShardError, (self.path, self.message)


class WorkerLostError(Error):
    """Worker processes died (killed, out of memory) while they ran map_sql on
    these shards, as many times as Dask retries a task."""

    def __init__(self, paths: Sequence[str], message: str) -> None:
        super().__init__(f"shards {', '.join(paths)}: {message}")
        self.paths = tuple(paths)
        self.message = message


class ReduceError(Error):
    """reduce_sql failed on the caller's side, or the shards' rows could not
    become table `map`."""


@dataclass(frozen=True)
class MapPlan:
    """What every map task needs; sent once to each worker. The modules are
    the signed bytes and the keys 32 raw bytes each: a worker verifies them
    itself and reads no file but the shards."""

    modules: tuple[bytes, ...]
    trusted_keys: tuple[bytes, ...]
    allow_unsigned: bool
    grant: tuple[tuple[str, ...], tuple[str, ...] | None]  # capability names, sql tables (see canonical_grant)
    runtime_options: tuple[tuple[str, Any], ...]
    map_sql: str


class ShardRows(NamedTuple):
    path: str
    columns: tuple[str, ...]
    rows: list[Row]


# --------------------------------------------------------------- the caller


@overload
def query(
    shards: Shards,
    map_sql: str,
    reduce_sql: str | None = None,
    *,
    modules: Iterable[ModuleFile],
    trusted_keys: TrustedKey | Iterable[TrustedKey],
    client: Client | None = None,
    allow_unsigned: bool = False,
    grant: Grant = (),
    as_frame: Literal[False] = False,
    workers: int | None = None,
    progress: bool = False,
    db_modules: bool = False,
    **runtime_options: Any,
) -> list[Row]: ...


@overload
def query(
    shards: Shards,
    map_sql: str,
    reduce_sql: str | None = None,
    *,
    modules: Iterable[ModuleFile],
    trusted_keys: TrustedKey | Iterable[TrustedKey],
    client: Client | None = None,
    allow_unsigned: bool = False,
    grant: Grant = (),
    as_frame: Literal[True],
    workers: int | None = None,
    progress: bool = False,
    db_modules: bool = False,
    **runtime_options: Any,
) -> Any: ...


def query(
    shards: Shards,
    map_sql: str,
    reduce_sql: str | None = None,
    *,
    modules: Iterable[ModuleFile],
    trusted_keys: TrustedKey | Iterable[TrustedKey],
    client: Client | None = None,
    allow_unsigned: bool = False,
    grant: Grant = (),
    as_frame: bool = False,
    workers: int | None = None,
    progress: bool = False,
    db_modules: bool = False,
    **runtime_options: Any,
) -> list[Row] | Any:
    """Runs map_sql on every shard (read-only, on Dask workers), gathers the
    rows into table ``map`` of an in-memory database on this side and runs
    reduce_sql there; without reduce_sql, returns the map rows.

    ``shards``: a glob pattern (str), or paths. ``modules``: signed .wasm
    files or bytes, installed on both sides; ``trusted_keys``: .pub paths (read
    here), key text or 32 raw bytes. ``client``: a dask.distributed Client,
    left open; without one, a LocalCluster of ``workers`` processes (default:
    the CPU count) is started and closed. ``runtime_options`` (timeout_ms,
    fuel, memory_pages, max_result_bytes, trust_deterministic, cache_dir)
    and ``grant`` go to the Runtime on every side. Returns row tuples, or a pandas
    DataFrame with ``as_frame=True``. ``progress=True`` shows Dask's
    progress bar on stderr. ``db_modules=True`` adds the modules stored in
    the shards (``sqlwasm store``), verified against ``trusted_keys`` like any
    other; every shard that stores a module must store the same bytes. A
    failing shard raises ShardError.
    """
    columns, rows = query_with_columns(
        shards,
        map_sql,
        reduce_sql,
        modules=modules,
        trusted_keys=trusted_keys,
        client=client,
        allow_unsigned=allow_unsigned,
        grant=grant,
        workers=workers,
        progress=progress,
        db_modules=db_modules,
        **runtime_options,
    )
    if not as_frame:
        return rows
    try:
        import pandas
    except ImportError:
        raise Error("as_frame=True needs pandas: pip install 'sqlwasm[dask]'") from None
    return pandas.DataFrame.from_records(rows, columns=list(columns))


def query_with_columns(
    shards: Shards,
    map_sql: str,
    reduce_sql: str | None = None,
    *,
    modules: Iterable[ModuleFile],
    trusted_keys: TrustedKey | Iterable[TrustedKey],
    client: Client | None = None,
    allow_unsigned: bool = False,
    grant: Grant = (),
    workers: int | None = None,
    progress: bool = False,
    db_modules: bool = False,
    **runtime_options: Any,
) -> tuple[tuple[str, ...], list[Row]]:
    """query() that also returns the result's column names (for printing a
    table: `sqlwasm query 'data/*.db' --map SQL --reduce SQL` calls this)."""
    if client is not None and workers is not None:
        raise Error("workers sizes the cluster query() starts; with a client, size the client's cluster instead")
    if workers is not None and workers < 1:
        raise Error(f"workers must be at least 1, got {workers}")
    unknown = sorted(set(runtime_options) - set(RUNTIME_OPTIONS))
    if unknown:
        raise Error(f"unknown options {unknown}; the Runtime's are {', '.join(RUNTIME_OPTIONS)}")
    paths = resolve_shards(shards)
    sizes = [shard_size(path) for path in paths]  # a missing shard fails here, before any work
    module_bytes = tuple(_read_module(module) for module in modules)
    key_bytes = trusted_key_bytes(trusted_keys)
    if db_modules:
        runtime = Runtime(
            trusted_keys=list(key_bytes), allow_unsigned=allow_unsigned, grant=grant_of(canonical_grant(grant)),
            **runtime_options,
        )
        module_bytes += stored_modules(runtime, paths, module_bytes)
    plan = MapPlan(
        module_bytes, key_bytes, allow_unsigned, canonical_grant(grant), tuple(sorted(runtime_options.items())), map_sql
    )
    # Verified and compiled here too (cached as on the workers): a bad module
    # fails before any work, and the reduce side needs them. Workers check
    # for themselves.
    loaded = loaded_modules(plan)
    with _cluster(client, workers) as active:
        results = _map_on(active, plan, paths, sizes, progress)
    columns = _agreed_columns(results)
    rows = [row for result in results for row in result.rows]
    if reduce_sql is None:
        return columns, rows
    return _reduce(loaded, columns, rows, reduce_sql)


def stored_modules(runtime: Runtime, paths: Sequence[str], passed: Sequence[bytes]) -> tuple[bytes, ...]:
    """The modules stored in the shards, each verified by runtime (the
    database chooses no trust), once per name: every shard storing a module
    of a name must store the same bytes, and a module also passed in
    ``modules`` must be the same one."""
    by_name: dict[str, tuple[str, str]] = {}  # name -> (sha256, the first shard that stores it)
    for data in passed:
        by_name[runtime.load(data).name] = (hashlib.sha256(data).hexdigest(), "modules")
    found: list[bytes] = []
    for path in paths:
        conn = open_shard(path)
        try:
            stored = [row for row, _ in runtime.load_stored_rows(conn)]  # errors name the module and the shard
        except Error as exc:
            raise ShardError(path, str(exc)) from None
        finally:
            conn.close()
        for module in stored:
            seen = by_name.get(module.name)
            if seen is None:
                by_name[module.name] = (module.sha256, path)
                found.append(module.wasm)
            elif seen[0] != module.sha256:
                raise ShardError(
                    path,
                    f"its stored module '{module.name}' (sha256 {module.sha256[:16]}...) is not the one in "
                    f"{seen[1]} (sha256 {seen[0][:16]}...)",
                )
    return tuple(found)


def resolve_shards(shards: Shards) -> list[str]:
    """Absolute paths (workers may run elsewhere): a str is a glob pattern,
    its matches sorted; a path or a list of paths is taken as given."""
    if isinstance(shards, str):
        matches = sorted(glob.glob(shards, recursive=True))
        if not matches:
            raise Error(f"no file matches the shard pattern {shards!r}")
        return [os.path.abspath(match) for match in matches]
    listed = [shards] if isinstance(shards, os.PathLike) else list(shards)
    if not listed:
        raise Error("no shards given")
    for shard in listed:
        if not isinstance(shard, (str, os.PathLike)):
            raise Error(f"a shard is a path, not {type(shard).__name__}")
    return [os.path.abspath(os.fspath(shard)) for shard in listed]


def shard_size(path: str) -> int:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ShardError(path, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise ShardError(path, "not a regular file")
    return info.st_size


def group_shards(paths: Sequence[str], sizes: Sequence[int], threads: int) -> list[tuple[str, ...]]:
    """Shards packed into tasks of about equal total size (largest first onto
    the lightest task): a task per shard when shards are large, otherwise
    TASKS_PER_THREAD tasks per worker thread, and never a task without shards.
    Within a task the shards keep their order; the heaviest tasks come first."""
    wanted = max(-(-sum(sizes) // MIN_TASK_BYTES), TASKS_PER_THREAD * max(threads, 1))
    count = min(len(paths), wanted)
    # (bytes, shards, task): of equally light tasks the one with fewest
    # shards comes first, so empty files do not all land in one task.
    loads: list[tuple[int, int, int]] = [(0, 0, index) for index in range(count)]
    members: list[list[int]] = [[] for _ in range(count)]
    for shard in sorted(range(len(paths)), key=lambda i: (-sizes[i], i)):
        total, held, index = heapq.heappop(loads)
        members[index].append(shard)
        heapq.heappush(loads, (total + sizes[shard], held + 1, index))
    by_weight = sorted(members, key=lambda group: -sum(sizes[i] for i in group))
    return [tuple(paths[i] for i in sorted(group)) for group in by_weight]


def trusted_key_bytes(trusted_keys: TrustedKey | Iterable[TrustedKey]) -> tuple[bytes, ...]:
    """The keys as 32 raw bytes each, in order, without repeats. A str is key
    text when it starts with the key tag ('sqlwasm-ed25519 ...'), otherwise
    the path of a .pub file, read here on the caller's side."""
    keys = [trusted_keys] if isinstance(trusted_keys, _ONE_KEY) else list(trusted_keys)
    raw: dict[bytes, None] = {}
    for key in keys:
        if isinstance(key, str) and key.lstrip().startswith(PUBLIC_KEY_TAG + " "):
            raw[parse_public_key_text(key, "trusted key text").raw] = None
        else:
            raw[load_public_key(key).raw] = None
    return tuple(raw)


def canonical_grant(grant: Grant) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """A grant as plain sorted names (and sql's tables): one form to send and
    to compare."""
    names, tables = parse_grant(grant)
    return tuple(sorted(names)), None if tables is None else tuple(sorted(tables))


def grant_of(spec: tuple[tuple[str, ...], tuple[str, ...] | None]) -> dict[str, bool | list[str]]:
    names, tables = spec
    grant: dict[str, bool | list[str]] = {name: True for name in names}
    if tables is not None:
        grant["sql"] = list(tables)
    return grant


def _read_module(module: ModuleFile | Module) -> bytes:
    if isinstance(module, Module):
        raise Error(f"module '{module.name}' is loaded already; pass its .wasm path or bytes: those travel to workers")
    if isinstance(module, (bytes, bytearray, memoryview)):
        return bytes(module)
    try:
        return Path(module).read_bytes()
    except OSError as exc:
        raise Error(f"cannot read module {os.fspath(module)}: {exc.strerror}") from exc


@contextmanager
def _cluster(client: Client | None, workers: int | None) -> Iterator[Client]:
    if client is not None:
        yield client
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise Error("sqlwasm.distributed needs Dask: pip install 'sqlwasm[dask]'") from None
    processes = workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=processes,
            threads_per_worker=1,
            processes=True,
            # No dashboard, and its HTTP server on a free port (not 8787).
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.CRITICAL,  # a failing shard is raised to the caller; not logged too
        ) as cluster,
        Client(cluster) as started,
    ):
        yield started


def _map_on(client: Client, plan: MapPlan, paths: list[str], sizes: list[int], progress: bool) -> list[ShardRows]:
    """Each shard's rows, in the order of paths."""
    from dask.distributed import KilledWorker
    from dask.distributed import progress as progress_bar

    groups = group_shards(paths, sizes, sum(client.nthreads().values()))
    shared_plan = client.scatter(plan, broadcast=True, hash=False)
    token = uuid.uuid4().hex
    keys = [f"sqlwasm-map-{token}-{index}" for index in range(len(groups))]
    futures = client.map(run_map_task, groups, plan=shared_plan, key=keys, pure=False)
    try:
        if progress:
            # Dask draws on stdout; the rows may be going there (the CLI).
            with redirect_stdout(sys.stderr):
                progress_bar(futures)
        gathered: list[list[ShardRows]] = client.gather(futures)
    except KilledWorker as exc:
        group = groups[keys.index(exc.task)] if exc.task in keys else ()
        deaths = exc.allowed_failures + 1
        raise WorkerLostError(
            group,
            "the worker process running map_sql on them died (killed, or out of memory?)"
            if deaths == 1
            else f"{deaths} worker processes died running map_sql on them, in turn (killed, or out of memory?)",
        ) from None
    finally:
        client.cancel([*futures, shared_plan])
    by_path = {result.path: result for results in gathered for result in results}
    return [by_path[path] for path in paths]


def _agreed_columns(results: list[ShardRows]) -> tuple[str, ...]:
    columns = results[0].columns
    for result in results[1:]:
        if result.columns != columns:
            raise ShardError(
                result.path,
                f"map_sql's result columns here are {list(result.columns)}, "
                f"on shard {results[0].path} {list(columns)}; every shard must give the same columns",
            )
    return columns


def _reduce(
    loaded: Loaded, columns: tuple[str, ...], rows: list[Row], reduce_sql: str
) -> tuple[tuple[str, ...], list[Row]]:
    folded = [ascii_lower(name) for name in columns]  # SQLite's names ignore ASCII case only
    repeated = sorted({name for name, key in zip(columns, folded) if folded.count(key) > 1})
    if repeated:
        raise ReduceError(
            f"map_sql's result columns become the columns of table map, so they need distinct names; "
            f"{repeated} appear more than once (name them with AS)"
        )
    conn = apsw.Connection(":memory:")
    try:
        for module in loaded.modules:
            loaded.runtime.install(conn, module)
        conn.execute(f"CREATE TABLE map({', '.join(_quoted(name) for name in columns)})")
        with conn:
            conn.executemany(f"INSERT INTO map VALUES ({', '.join('?' * len(columns))})", rows)
        try:
            return select(conn, reduce_sql, "reduce_sql")
        except apsw.Error as exc:
            raise ReduceError(f"reduce_sql failed: {_describe(exc)}") from None
    finally:
        conn.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def select(conn: apsw.Connection, sql: str, what: str) -> tuple[tuple[str, ...], list[Row]]:
    """Column names and rows of one statement that only reads (SQLite says so
    before it runs); anything else is an Error naming ``what``."""
    described: list[tuple[str, ...]] = []

    def check(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        if described:
            raise Error(f"{what} must be one statement; a second one follows: {statement.strip()[:80]!r}")
        if not cursor.is_readonly:
            raise Error(f"{what} must only read, and {statement.strip()[:80]!r} writes")
        described.append(tuple(column[0] for column in cursor.description))
        return True

    cursor = conn.cursor()
    cursor.exec_trace = check
    rows: list[Row] = cursor.execute(sql).fetchall()
    if not described:
        raise Error(f"{what} has no statement")
    return described[0], rows


# ------------------------------------------------ modules, on every process


@dataclass(frozen=True)
class Loaded:
    runtime: Runtime
    modules: tuple[Module, ...]


class _ProcessState:
    """Per process (each worker, and the caller): the module sets it verified
    and compiled (a few, least recently used out first), and counts that tests
    read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded: OrderedDict[tuple[Any, ...], Loaded] = OrderedDict()
        self.loads = 0  # module sets verified and compiled in this process
        self.tasks = 0  # map tasks run in this process


_PROCESS = _ProcessState()


def worker_counts() -> dict[str, int]:
    """This process's count of module sets loaded and map tasks run (read on
    the workers with ``client.run(worker_counts)``: one load per worker and
    module set)."""
    with _PROCESS.lock:
        return {"loads": _PROCESS.loads, "tasks": _PROCESS.tasks}


def loaded_modules(plan: MapPlan) -> Loaded:
    """The plan's modules, verified against the plan's keys by this process
    (a worker never relies on the caller's check) and compiled, once per
    process and module set."""
    key = (
        tuple(hashlib.sha256(data).digest() for data in plan.modules),
        plan.trusted_keys,
        plan.allow_unsigned,
        plan.grant,
        plan.runtime_options,
    )
    with _PROCESS.lock:
        loaded = _PROCESS.loaded.get(key)
        if loaded is not None:
            _PROCESS.loaded.move_to_end(key)
            return loaded
        runtime = Runtime(
            trusted_keys=list(plan.trusted_keys),
            allow_unsigned=plan.allow_unsigned,
            grant=grant_of(plan.grant),
            **dict(plan.runtime_options),
        )
        loaded = Loaded(runtime, tuple(runtime.load(data) for data in plan.modules))
        _PROCESS.loads += 1
        _PROCESS.loaded[key] = loaded
        while len(_PROCESS.loaded) > MODULE_SETS_KEPT:
            _PROCESS.loaded.popitem(last=False)
        return loaded


def run_map_task(paths: Sequence[str], plan: MapPlan) -> list[ShardRows]:
    """A Dask task: map_sql over each shard in turn, on a worker."""
    with _PROCESS.lock:
        _PROCESS.tasks += 1
    loaded = loaded_modules(plan)
    return [map_shard(loaded, path, plan.map_sql) for path in paths]


def open_shard(path: str) -> apsw.Connection:
    """A read-only connection that writes nothing: a missing file is an
    error (never created), no other database can be attached (VACUUM INTO
    attaches the file it writes, and creates it even read-only), and
    query_only refuses any other change."""
    try:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        reason = "no such file" if not os.path.exists(path) else _describe(exc)
        raise ShardError(path, f"cannot open it read-only: {reason}") from None
    try:
        conn.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
        conn.execute("PRAGMA query_only = 1")
    except apsw.Error as exc:
        conn.close()
        raise ShardError(path, _describe(exc)) from None
    return conn


def map_shard(loaded: Loaded, path: str, map_sql: str) -> ShardRows:
    conn = open_shard(path)
    try:
        for module in loaded.modules:
            loaded.runtime.install(conn, module)
        columns, rows = select(conn, map_sql, "map_sql")
    except (apsw.Error, Error) as exc:
        raise ShardError(path, _describe(exc)) from None
    finally:
        conn.close()
    return ShardRows(path, columns, rows)
