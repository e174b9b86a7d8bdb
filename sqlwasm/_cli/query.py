"""`sqlwasm query` (one database, or shards on Dask) and `sqlwasm shell`."""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from .. import _apsw_cli as _apsw
from .._errors import Error
from .._interrupt import CtrlC
from .._progress import Progress
from .._table import cell_text, format_table, printable
from .loading import Loader, showing_logs
from .options import UsageError

# ------------------------------------------------------------ query


def _sql_text(args: argparse.Namespace) -> str:
    """The SQL argument, `-` for standard input, or --file."""
    if args.file is not None and args.sql is not None:
        raise UsageError("give the SQL as an argument or with --file, not both")
    if args.file is None and args.sql is None:
        raise UsageError("no SQL: give it as an argument, `-` for standard input, or --file FILE")
    if args.sql is not None and args.sql != "-":
        return str(args.sql)
    source = args.file if args.file is not None else "-"
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise Error(f"cannot read {source}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Error(f"{'standard input' if source == '-' else source}: SQL is not UTF-8 (byte {exc.start})") from exc


_NAMED = re.compile(r"[:@$]([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def _param_value(text: str) -> int | float | str:
    """A number becomes INTEGER or REAL, anything else TEXT."""
    if re.fullmatch(r"[+-]?[0-9]+", text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    if re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text) and math.isfinite(float(text)):
        return float(text)
    return text


def _bindings(params: list[str]) -> list[Any] | dict[str, Any]:
    """--param VALUE (positional, for ?) or --param :NAME=VALUE (named)."""
    matches = [m for p in params if (m := _NAMED.fullmatch(p))]
    if not matches:
        return [_param_value(p) for p in params]
    if len(matches) != len(params):
        raise UsageError("--param: use all positional (VALUE) or all named (:NAME=VALUE), not both")
    named = {m.group(1): _param_value(m.group(2)) for m in matches}
    if len(named) != len(matches):
        raise UsageError("--param: a name is given twice")
    return named


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    return value


def _json_text(rows: list[dict[str, Any]]) -> str:
    """JSON with SQLite's infinite REALs as 1e999 and -1e999, numbers every
    JSON reader takes as infinite (json.dumps would write Infinity, which is
    not JSON)."""
    marker = f"sqlwasm-infinity-{uuid.uuid4().hex}"

    def finite(value: Any) -> Any:
        if isinstance(value, float) and math.isinf(value):
            return marker if value > 0 else "-" + marker
        return value

    text = json.dumps([{k: finite(v) for k, v in row.items()} for row in rows], indent=1, allow_nan=False)
    return text.replace(f'"-{marker}"', "-1e999").replace(f'"{marker}"', "1e999")


def _position(sql: str, offset: int) -> str:
    """Where in sql an error is, on one line."""
    before = sql.encode("utf-8")[:offset].decode("utf-8", "replace")
    after = sql[len(before) :]
    return f"at character {len(before) + 1} of the SQL: {printable(before[-30:])} <here> {printable(after[:30])}"


def cmd_query(args: argparse.Namespace) -> int:
    if args.map is not None:
        return _shard_query(args)
    if args.reduce is not None or args.workers is not None:
        raise UsageError("--reduce and --workers are for a query over shards: give its SQL with --map")
    sql = _sql_text(args)
    bindings = _bindings(args.param)
    with showing_logs():
        result = _query(args, sql, bindings)
    _print_result(args, result)
    return 0


def _query(args: argparse.Namespace, sql: str, bindings: list[Any] | dict[str, Any]) -> _apsw.Result:
    loader = Loader(args)
    with CtrlC() as ctrl_c:
        conn, _, _ = loader.connect(args)
        try:
            progress = Progress(sys.stderr, args.progress or sys.stderr.isatty())
            with ctrl_c.statement(conn), progress:
                result = _apsw.run(conn, sql, bindings, progress)
        except UnicodeDecodeError as exc:  # APSW decodes every TEXT value as UTF-8
            raise Error(
                f"a result is TEXT that is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "CAST it AS BLOB to see its bytes"
            ) from exc
        except _apsw.HostError as exc:
            # Stopped by Ctrl-C: SQLite's interrupt error, or a guest's
            # `interrupted` if the statement was inside one.
            if ctrl_c.fired:
                raise KeyboardInterrupt from None
            if isinstance(exc, _apsw.BindingsError):
                raise Error(f"{exc} (give the values with --param)") from exc
            offset = _apsw.error_offset(exc)
            if offset is None:
                raise
            raise Error(f"{exc} ({_position(sql, offset)})") from exc
        finally:
            conn.close()
    return result


def _shard_query(args: argparse.Namespace) -> int:
    """DB is a glob of shard files: --map runs on each (on Dask workers),
    --reduce over table `map` here (docs/distributed.md)."""
    if args.sql is not None or args.file is not None:
        raise UsageError("with --map the SQL is --map's (and --reduce's): give no other SQL")
    if args.param or args.create:
        raise UsageError("--param and --create are not for a query over shards")
    from .. import distributed

    loader = Loader(args)
    module_bytes, keys = loader.shard_modules(args)
    with showing_logs():
        names, rows = distributed.query_with_columns(
            args.db, args.map, args.reduce, modules=module_bytes, trusted_keys=keys,
            allow_unsigned=loader.allow_unsigned, grant=loader.grant, workers=args.workers,
            progress=args.progress or sys.stderr.isatty(), db_modules=args.db_modules or loader.config.db_modules,
            **loader.limits, **loader.cache_option(),
        )
    _print_result(args, _apsw.Result(list(names), [tuple(r) for r in rows], None, []))
    return 0


def _print_result(args: argparse.Namespace, result: _apsw.Result) -> None:
    names, rows = result.names, result.rows
    if args.timer:
        for statement, seconds in result.timings:
            print(f"time: {1e3 * seconds:.1f} ms  {printable(' '.join(statement.split()))[:60]}", file=sys.stderr)
    if args.json:
        print(_json_text([{n: _json_value(v) for n, v in zip(names, row)} for row in rows]))
    elif args.csv:
        if names:
            writer = csv.writer(sys.stdout)
            writer.writerow(names)
            null = args.null if args.null is not None else ""
            writer.writerows([[null if v is None else cell_text(v) for v in row] for row in rows])
    else:
        table = format_table(names, rows, null=args.null if args.null is not None else "NULL")
        if table:
            print(table)
        if result.changed is not None:
            print(f"{result.changed} row{'' if result.changed == 1 else 's'} changed")


def cmd_shell(args: argparse.Namespace) -> int:
    with showing_logs():
        return _shell(args)


def _shell(args: argparse.Namespace) -> int:
    loader = Loader(args)
    conn, modules, stored = loader.connect(args)
    try:
        with CtrlC() as ctrl_c:
            shell = _apsw.Shell(conn, modules, loader, ctrl_c, stored)
            shell.timer = args.timer
            return shell.run(args.sql)
    finally:
        conn.close()


