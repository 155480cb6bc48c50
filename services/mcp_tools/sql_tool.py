"""Read-only SQL over the sample database, bounded in every way a caller can push it:
statements (authorizer), time (between SQLite steps, and for the whole call), value sizes
(`SQLITE_LIMIT_LENGTH`), columns, rows, result bytes, and queries running at once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver.exceptions import ToolError

from services.mcp_tools.settings import McpToolsSettings

# Read-only: only these SQLite authorizer actions pass; writes, ATTACH and PRAGMA are denied.
# Functions (SQLITE_FUNCTION) pass only when named in ALLOWED_FUNCTIONS.
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),  # WITH RECURSIVE (a read too)
}
# What a read-only analytics query needs, and nothing else: every other function is refused,
# among them fts3_tokenizer (returns a pointer into the library), load_extension, readfile
# and writefile (the file system), randomblob and zeroblob (memory on demand), and
# sqlite_version and friends (nothing to learn about the server). printf and format are ours
# (_GuardedPrintf); the values of all of them are bounded by SQLITE_LIMIT_LENGTH.
ALLOWED_FUNCTIONS = frozenset(
    {
        # aggregates
        "count", "sum", "total", "avg", "min", "max", "group_concat", "string_agg",
        # window functions
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile",
        "lag", "lead", "first_value", "last_value", "nth_value",
        # text
        "lower", "upper", "length", "octet_length", "substr", "substring", "trim", "ltrim",
        "rtrim", "replace", "instr", "like", "glob", "printf", "format", "char", "unicode",
        "concat", "concat_ws", "quote", "hex", "typeof",
        # null handling and conditions
        "coalesce", "ifnull", "nullif", "iif", "likely", "unlikely", "likelihood",
        # numbers
        "abs", "round", "sign", "random", "ceil", "ceiling", "floor", "trunc", "sqrt", "pow",
        "power", "exp", "ln", "log", "log10", "log2", "mod", "pi",
        # dates and times
        "date", "time", "datetime", "julianday", "strftime", "unixepoch", "timediff",
    }
)  # fmt: skip
MAX_COLUMNS = 64  # SQLITE_LIMIT_COLUMN: bounds one row at columns x max_value_bytes


@dataclass(frozen=True)
class QueryLimits:
    max_rows: int = 50
    max_result_bytes: int = 64 * 1024
    max_value_bytes: int = 256 * 1024
    query_timeout_s: float = 2.0
    call_timeout_s: float = 2.5
    max_running_queries: int = 4

    @classmethod
    def from_settings(cls, settings: McpToolsSettings) -> QueryLimits:
        return cls(
            max_rows=settings.max_rows,
            max_result_bytes=settings.max_result_bytes,
            max_value_bytes=settings.max_value_bytes,
            query_timeout_s=settings.query_timeout_s,
            call_timeout_s=settings.call_timeout_s,
            max_running_queries=settings.max_running_queries,
        )


class QueryRunner:
    """Runs `database_query` statements in worker threads. A thread that outlives the call
    (one SQLite step that does not return) is abandoned, but it keeps its slot until it ends,
    so abandoned threads cannot pile up."""

    def __init__(self, db: Path, limits: QueryLimits) -> None:
        self.db = db
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_running_queries)

    async def run(self, sql: str) -> dict[str, Any]:
        """The result as {columns, rows, truncated}; raises ToolError with a reason the model
        can read."""
        if not self._slots.acquire(blocking=False):
            raise ToolError("server busy: too many queries still running, try again shortly")
        query = _Query(self.db, sql, self.limits, self._slots)
        try:
            with anyio.fail_after(self.limits.call_timeout_s):
                return await anyio.to_thread.run_sync(query.run, abandon_on_cancel=True)
        except TimeoutError:
            raise ToolError(
                f"query stopped after {self.limits.call_timeout_s:g} s (one step ran too long)"
            ) from None
        finally:
            query.abandon()  # a no-op once the thread is done; else it is told to stop


@dataclass
class _Query:
    db: Path
    sql: str
    limits: QueryLimits
    slots: threading.BoundedSemaphore
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _state: str = "pending"  # -> running -> done, or -> abandoned
    _conn: sqlite3.Connection | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _refusal: str | None = None  # why our printf guard stopped the statement

    def run(self) -> dict[str, Any]:
        with self._lock:
            if self._state == "abandoned":  # the caller gave up before this thread started
                raise ToolError("query abandoned")
            self._state = "running"
        try:
            return self._execute()
        finally:
            with self._lock:
                self._state = "done"
            self.slots.release()

    def abandon(self) -> None:
        """The caller stopped waiting: stop the statement at its next step (SQLite cannot
        stop inside one function call), or, if the thread never started, free its slot."""
        self._stop.set()
        with self._lock:
            if self._state == "pending":
                self._state = "abandoned"
                self.slots.release()
            elif self._state == "running" and self._conn is not None:
                self._conn.interrupt()

    def _execute(self) -> dict[str, Any]:
        limits = self.limits
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, check_same_thread=False)
        printf = _GuardedPrintf(limits.max_value_bytes, self)
        deadline = time.monotonic() + limits.query_timeout_s
        try:
            with self._lock:
                self._conn = conn
            # No string, blob or row above the limit (printf, zeroblob, replace, group_concat,
            # ...: "string or blob too big" instead of hundreds of MB), nor a longer statement.
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
            conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, limits.max_value_bytes)
            conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)
            conn.set_authorizer(self._authorize)
            for name in ("printf", "format"):
                conn.create_function(name, -1, printf, deterministic=True)
            # A runaway statement (say, an endless recursive CTE) is interrupted at the
            # deadline, or once abandoned; the progress handler runs between steps, never
            # inside one.
            conn.set_progress_handler(
                lambda: int(self._stop.is_set() or time.monotonic() > deadline), 10_000
            )
            try:
                cursor = conn.execute(self.sql)
                columns = [d[0] for d in cursor.description or ()]
                rows, more = _fetch(cursor, limits)
            except sqlite3.Error as err:
                raise self._tool_error(err) from err
        finally:
            with self._lock:  # abandon() must not interrupt a closed connection
                self._conn = None
            printf.close()
            conn.close()
        return _fit(columns, rows, more, limits.max_result_bytes)

    def _authorize(self, action: int, _arg1: str | None, arg2: str | None, *_rest: Any) -> int:
        """SQLite asks while preparing the statement; a refusal names what was refused (the
        statement then fails with "not authorized", which _tool_error replaces)."""
        if action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in ALLOWED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            if self._refusal is None:
                self._refusal = (
                    f"function {name}() is not allowed: this read-only tool allows only "
                    "ordinary aggregate, window, text, number and date functions"
                )
        return sqlite3.SQLITE_DENY

    def _tool_error(self, err: sqlite3.Error) -> ToolError:
        limits = self.limits
        if self._refusal is not None:
            return ToolError(f"query refused: {self._refusal}")
        if str(err) == "interrupted":
            return ToolError(f"query took longer than {limits.query_timeout_s:g} s")
        if isinstance(err, sqlite3.DataError):
            return ToolError(
                f"query failed: {err} (the server's limit is {limits.max_value_bytes} bytes "
                "for one string, blob, row or statement)"
            )
        return ToolError(f"query failed: {err}")


def _fetch(cursor: sqlite3.Cursor, limits: QueryLimits) -> tuple[list[list[Any]], bool]:
    """Rows until `max_rows` or about `max_result_bytes` of them; True when more were left."""
    rows: list[list[Any]] = []
    size = 0
    while len(rows) < limits.max_rows:
        row = cursor.fetchone()
        if row is None:
            return rows, False
        values = [_json_value(v) for v in row]
        rows.append(values)
        size += len(json.dumps(values).encode())
        if size > limits.max_result_bytes:  # _fit drops this row and maybe more
            return rows, True
    return rows, cursor.fetchone() is not None


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return "x'" + value.hex() + "'"  # SQLite's blob literal
    return value


def _fit(columns: list[str], rows: list[list[Any]], more: bool, max_bytes: int) -> dict[str, Any]:
    """The largest prefix of `rows` whose JSON result fits in `max_bytes`."""

    def result(n: int) -> dict[str, Any]:
        return {"columns": columns, "rows": rows[:n], "truncated": more or n < len(rows)}

    def fits(n: int) -> bool:
        return len(json.dumps(result(n)).encode()) <= max_bytes

    if fits(len(rows)):
        return result(len(rows))
    if not fits(0):
        raise ToolError(f"query failed: even its column names exceed {max_bytes} bytes")
    low, high = 0, len(rows) - 1  # fits(low), and every n > high does not
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return result(low)


# One printf conversion: flags, width, precision, length modifier, type (SQLite's syntax).
_CONVERSION = re.compile(r"%([-+ #0!,]*)(\*|\d+)?(?:\.(\*|\d*))?(?:ll|l)?(.)", re.DOTALL)
_NO_VALUE = {"%", "n"}  # conversions that read no argument (a `*` still reads one)


class _GuardedPrintf:
    """SQLite's own printf/format, refusing first a width or precision above the value limit:
    such a conversion cannot produce a value, and `%.<n>c` spends seconds in one function call
    (one character at a time past the limit) where nothing can interrupt it."""

    def __init__(self, max_value_bytes: int, query: _Query) -> None:
        self.max = max_value_bytes
        self.query = query
        self._builtin = sqlite3.connect(":memory:", check_same_thread=False)
        self._builtin.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)

    def __call__(self, *args: Any) -> Any:
        if not args:
            return None
        fmt = args[0]
        if isinstance(fmt, bytes):  # SQLite reads a blob format as text
            fmt = fmt.decode("utf-8", "replace")
        if isinstance(fmt, str):
            too_big = self._oversized(fmt, args[1:])
            if too_big is not None:
                self.query._refusal = (
                    f"printf width or precision {too_big} exceeds the server's limit of "
                    f"{self.max} bytes for one value"
                )
                raise ValueError(self.query._refusal)
        marks = ", ".join("?" * len(args))
        return self._builtin.execute(f"SELECT printf({marks})", args).fetchone()[0]

    def _oversized(self, fmt: str, args: Sequence[Any]) -> int | None:
        """The first width or precision above the limit, reading arguments as SQLite does
        (where the two parsers could differ, this one errs towards refusing)."""
        position = 0
        for match in _CONVERSION.finditer(fmt):
            width, precision, kind = match.group(2), match.group(3), match.group(4)
            for number in (width, precision):
                if number == "*":
                    value = self._as_int(args[position]) if position < len(args) else 0
                    position += 1
                else:
                    value = int(number) if number else 0
                if abs(value) > self.max:
                    return value
            if kind not in _NO_VALUE:
                position += 1  # the converted value itself
        return None

    def _as_int(self, value: Any) -> int:
        """The integer SQLite's printf reads from an argument (text "9e9x" included)."""
        row = self._builtin.execute("SELECT CAST(? AS INTEGER)", (value,)).fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._builtin.close()


def describe(db: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t!r})")] for t in tables}
    finally:
        conn.close()
