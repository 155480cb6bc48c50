"""The MCP tool server: its tools through the SDK in process (bounds included), and its HTTP
app, which answers only the caller with the credential."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel.names import Attr
from services.mcp_tools import sql_tool
from services.mcp_tools.server import _meta_attributes, create_app, create_server
from services.mcp_tools.settings import McpToolsSettings, MissingCredential
from tests.services.mcp_tools.serve import TOKEN, serve_mcp_tools


@pytest.fixture
def settings(tmp_path: Path) -> McpToolsSettings:
    return McpToolsSettings(sample_db=tmp_path / "sample.db", max_rows=3)


async def test_database_query_reads_and_caps_rows(settings: McpToolsSettings) -> None:
    async with Client(create_server(settings)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("database_query", {"sql": "SELECT name FROM products"})
    assert tools == {"database_query", "list_tables"}
    assert not result.is_error
    data = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert data["columns"] == ["name"] and len(data["rows"]) == 3 and data["truncated"]


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("DELETE FROM products", "not authorized"),
        ("INSERT INTO products VALUES (9, 'x', 'y', 1)", "not authorized"),
        ("ATTACH DATABASE ':memory:' AS other", "not authorized"),
        ("PRAGMA writable_schema = 1", "not authorized"),
        ("SELECT * FROM no_such_table", "no such table"),
        (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT COUNT(*) FROM n",
            "query took longer than 2 s",
        ),
    ],
)
async def test_database_query_is_read_only_and_bounded(
    settings: McpToolsSettings, sql: str, error: str
) -> None:
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("database_query", {"sql": sql})
    assert result.is_error
    assert error in result.content[0].text  # type: ignore[union-attr]


async def test_list_tables_and_meta_attributes(
    settings: McpToolsSettings, spans: InMemorySpanExporter
) -> None:
    async with Client(create_server(settings)) as client:
        meta: Any = {"omni2/conversation_id": "c-1", "omni2/user_id": "bob"}
        result = await client.call_tool("list_tables", {}, meta=meta)
    tables = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert tables["products"] == ["id", "name", "category", "price"]
    (server,) = [s for s in spans.get_finished_spans() if s.name == "tools/call list_tables"]
    assert server.attributes is not None
    assert server.attributes[Attr.CONVERSATION_ID] == "c-1"
    assert server.attributes[Attr.USER_ID] == "bob"


# -- bounds: result bytes, value sizes, time ----------------------------------------------------


async def _query(settings: McpToolsSettings, sql: str) -> tuple[bool, str, float]:
    async with Client(create_server(settings)) as client:
        started = time.monotonic()
        result = await client.call_tool("database_query", {"sql": sql})
        elapsed = time.monotonic() - started
    return bool(result.is_error), result.content[0].text, elapsed  # type: ignore[union-attr]


async def test_result_is_capped_in_bytes_dropping_rows(tmp_path: Path) -> None:
    settings = McpToolsSettings(sample_db=tmp_path / "s.db", max_result_bytes=2048)
    # 6 orders x 600 bytes: all six rows pass max_rows, but not the byte cap.
    error, text, _ = await _query(settings, "SELECT id, printf('%.*c', 600, 'x') FROM orders")
    assert not error, text
    data = json.loads(text)
    assert len(text.encode()) <= 2048
    assert data["truncated"] is True and 1 <= len(data["rows"]) < 6
    assert [row[0] for row in data["rows"]] == list(range(1, len(data["rows"]) + 1))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT printf('%.*c', 400000000, 'x')",  # a 400 MB value from a 40-byte query
        "SELECT format('%.*c', 400000000, 'x')",
        "SELECT printf('%.400000000c', 'x')",
        "SELECT printf('%400000000d', 1)",
        "SELECT printf(CAST('%.*c' AS BLOB), '400000000 x', 'x')",  # blob format, text count
        "SELECT printf('%s %.*c', 'a', 2147483647, 'x')",
        "SELECT printf('%*%%.c%n%.*c', 3, 'x', 400000000, 'y')",  # %-ish forms read args too
        "SELECT printf('%-*s', -400000000, 'x')",
    ],
)
async def test_printf_blowups_fail_fast_with_a_clear_error(
    settings: McpToolsSettings, sql: str
) -> None:
    error, text, elapsed = await _query(settings, sql)
    assert error and "exceeds the server's limit" in text, text
    assert elapsed < 0.5, f"{elapsed:.2f} s"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT length(replace(printf('%.*c', 200000, 'x'), 'x', 'xxxxxxxxxx'))",
        "SELECT length(printf('%.*c', 200000, 'x') || printf('%.*c', 200000, 'y'))",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 10000) "
        "SELECT length(group_concat(printf('%.*c', 100, 'x'))) FROM n",
    ],
)
async def test_values_above_the_sqlite_length_limit_fail(
    settings: McpToolsSettings, sql: str
) -> None:
    error, text, elapsed = await _query(settings, sql)
    assert error and "string or blob too big" in text and "262144 bytes" in text, text
    assert elapsed < 1.0, f"{elapsed:.2f} s"


@pytest.mark.parametrize(
    ("sql", "function"),
    [
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),  # a pointer into the library
        ("SELECT hex(FTS3_TOKENIZER('porter'))", "fts3_tokenizer"),
        ("SELECT load_extension('x')", "load_extension"),
        (
            "SELECT name FROM products WHERE id = (SELECT load_extension('/tmp/x.so'))",
            "load_extension",
        ),
        ("WITH t AS (SELECT fts3_tokenizer('simple') AS p) SELECT p FROM t", "fts3_tokenizer"),
        ("SELECT randomblob(16)", "randomblob"),
        ("SELECT zeroblob(400000000)", "zeroblob"),
        ("SELECT sqlite_version()", "sqlite_version"),
        (
            "SELECT count(*) FROM products WHERE sqlite_compileoption_used('x')",
            "sqlite_compileoption_used",
        ),
    ],
)
async def test_functions_outside_the_allowlist_are_refused(
    settings: McpToolsSettings, sql: str, function: str
) -> None:
    error, text, _ = await _query(settings, sql)
    assert error, text
    assert "query refused: function " in text, text
    assert f"function {function}() is not allowed" in text, text


@pytest.mark.parametrize(
    "sql",
    [
        # the offline model's queries (services/omni2/model.py)
        "SELECT category, COUNT(*) AS products, ROUND(AVG(price), 2) AS avg_price "
        "FROM products GROUP BY category ORDER BY category",
        "SELECT COUNT(*) FROM orders",
        "SELECT name FROM customers",
        # what an analytics question needs: aggregates, windows, text, dates, conditions
        "SELECT category, SUM(price), TOTAL(price), MIN(price), MAX(price), "
        "GROUP_CONCAT(name, ', ') FROM products GROUP BY category",
        "SELECT name, price, RANK() OVER (ORDER BY price DESC), "
        "ROW_NUMBER() OVER (PARTITION BY category ORDER BY price), "
        "LAG(price) OVER (ORDER BY id), SUM(price) OVER (ORDER BY id) FROM products",
        "SELECT UPPER(name), LOWER(category), LENGTH(name), SUBSTR(name, 1, 3), "
        "TRIM(' x '), REPLACE(name, 'a', 'b'), INSTR(name, 'a'), typeof(price), "
        "quote(name), hex(id), abs(-price), COALESCE(NULL, 1), IFNULL(NULL, 2), "
        "NULLIF(1, 1), IIF(price > 10, 'dear', 'cheap'), printf('%.2f', price) FROM products",
        "SELECT name FROM products WHERE name LIKE '%a%' OR name GLOB 'T*'",
        "SELECT date('now'), time('now'), datetime('now'), julianday('now') > 0, "
        "strftime('%Y', 'now'), CAST(price AS INTEGER) FROM products LIMIT 1",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 5) "
        "SELECT COUNT(*), AVG(i) FROM n",
    ],
)
async def test_the_sample_and_analytics_queries_still_run(
    settings: McpToolsSettings, sql: str
) -> None:
    error, text, _ = await _query(settings, sql)
    assert not error, text


async def test_printf_still_formats(settings: McpToolsSettings) -> None:
    error, text, _ = await _query(
        settings, "SELECT printf('%-6s|%6.2f|%.*c', name, price, 3, '*') FROM products"
    )
    assert not error, text
    assert json.loads(text)["rows"][0] == ["Trace Lens| 49.00|***"]


async def test_a_result_that_cannot_fit_and_blobs(settings: McpToolsSettings) -> None:
    error, text, _ = await _query(settings, f'SELECT 1 AS "{"c" * 70000}"')
    assert error and "even its column names exceed 65536 bytes" in text, text
    error, text, _ = await _query(settings, "SELECT CAST('abc' AS BLOB)")
    assert not error and json.loads(text)["rows"] == [["x'616263'"]]


async def test_too_many_columns_are_refused(settings: McpToolsSettings) -> None:
    error, text, _ = await _query(settings, "SELECT " + ", ".join(["1"] * 65))
    assert error and "too many columns" in text, text


async def test_a_long_call_is_answered_at_the_call_deadline_and_interrupted(
    tmp_path: Path,
) -> None:
    settings = McpToolsSettings(sample_db=tmp_path / "s.db", query_timeout_s=30, call_timeout_s=0.3)
    runaway = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"
    )
    async with Client(create_server(settings)) as client:
        started = time.monotonic()
        result = await client.call_tool("database_query", {"sql": runaway})
        elapsed = time.monotonic() - started
        assert result.is_error and "query stopped after 0.3 s" in result.content[0].text  # type: ignore[union-attr]
        assert elapsed < 1.0, f"{elapsed:.2f} s"
        # The abandoned statement was interrupted: every slot is free again at once.
        for _ in range(settings.max_running_queries):
            again = await client.call_tool("database_query", {"sql": "SELECT 1"})
            assert not again.is_error, again.content


async def test_a_step_nothing_can_interrupt_keeps_its_slot_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One SQLite step that never yields (simulated with a sleep): the caller gets its answer
    at the call deadline, and the stuck thread holds its slot, so such threads cannot pile up."""
    release = threading.Event()
    real = sql_tool._Query._execute

    def stuck(self: sql_tool._Query) -> dict[str, object]:
        if self.sql == "stuck":
            release.wait(10)
            return {"columns": [], "rows": [], "truncated": False}
        return real(self)

    monkeypatch.setattr(sql_tool._Query, "_execute", stuck)
    settings = McpToolsSettings(
        sample_db=tmp_path / "s.db", call_timeout_s=0.2, max_running_queries=1
    )
    async with Client(create_server(settings)) as client:
        started = time.monotonic()
        first = await client.call_tool("database_query", {"sql": "stuck"})
        assert time.monotonic() - started < 1.0
        assert first.is_error and "query stopped after 0.2 s" in first.content[0].text  # type: ignore[union-attr]
        busy = await client.call_tool("database_query", {"sql": "SELECT 1"})
        assert busy.is_error and "server busy" in busy.content[0].text  # type: ignore[union-attr]
        release.set()
        for _ in range(50):
            after = await client.call_tool("database_query", {"sql": "SELECT 1"})
            if not after.is_error:
                break
            await anyio.sleep(0.05)
        assert not after.is_error, after.content


# -- the credential ------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    settings = McpToolsSettings(sample_db=tmp_path / "s.db", auth_token=TOKEN)  # type: ignore[arg-type]
    with serve_mcp_tools(settings) as url:
        yield url


CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "list_tables",
        "arguments": {},
        "_meta": {"omni2/user_id": "admin", "omni2/conversation_id": "forged"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing credential"),
        ("Bearer wrong-credential-of-enough-length-0123456789", "invalid credential"),
        (f"Basic {TOKEN}", "malformed credential"),
        ("Bearer", "malformed credential"),
        (f"Bearer {TOKEN[:-1]}", "invalid credential"),
    ],
)
def test_requests_without_the_credential_get_401_and_run_nothing(
    served: str, spans: InMemorySpanExporter, authorization: str | None, reason: str
) -> None:
    headers = MCP_HEADERS | ({"authorization": authorization} if authorization else {})
    response = httpx.post(f"{served}/mcp", json=CALL, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]  # a JSON-RPC error, which MCP clients surface
    assert error["code"] == -32001 and error["message"].startswith(f"unauthorized: {reason}")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text
    # Refused before the MCP SDK: no span at all, so nothing the `_meta` claims is recorded.
    assert spans.get_finished_spans() == ()


def test_healthz_stays_open(served: str) -> None:
    assert httpx.get(f"{served}/healthz").json()["status"] == "ok"


async def test_omni2_with_the_credential_is_served_and_its_meta_recorded(
    served: str, spans: InMemorySpanExporter
) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with http, Client(streamable_http_client(f"{served}/mcp", http_client=http)) as client:
        meta: Any = {"omni2/conversation_id": "c-9", "omni2/user_id": "bob"}
        result = await client.call_tool("list_tables", {}, meta=meta)
    assert not result.is_error
    (server,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == "tools/call list_tables" and s.kind is SpanKind.SERVER
    ]
    assert server.attributes is not None
    assert server.attributes[Attr.USER_ID] == "bob"
    assert server.attributes[Attr.CONVERSATION_ID] == "c-9"


class _Request:
    def __init__(self, state: dict[str, str]) -> None:
        self.scope = {"state": state}


async def test_meta_identity_is_ignored_from_a_request_the_credential_did_not_pass(
    spans: InMemorySpanExporter,
) -> None:
    """Belt and braces: should a route ever reach the SDK without the credential check, its
    `_meta` identity still stays off the span."""
    meta = {"omni2/user_id": "admin", "omni2/conversation_id": "forged"}
    tracer = trace.get_tracer(__name__)

    async def done(_ctx: object) -> None:
        return None

    for state in ({}, {"mcp_tools.caller": "omni2"}):
        ctx = SimpleNamespace(meta=meta, request=_Request(state))
        with tracer.start_as_current_span(f"probe {len(state)}"):
            await _meta_attributes(ctx, done)
    unchecked, checked = sorted(spans.get_finished_spans(), key=lambda s: s.name)
    assert Attr.USER_ID not in (unchecked.attributes or {})
    assert (checked.attributes or {}).get(Attr.USER_ID) == "admin"


def test_the_http_server_refuses_to_start_without_a_long_credential(tmp_path: Path) -> None:
    with pytest.raises(MissingCredential, match="MCP_TOOLS_AUTH_TOKEN is not set"):
        create_app(McpToolsSettings(sample_db=tmp_path / "s.db"))
    short = "too-short-secret"
    with pytest.raises(MissingCredential, match="at least 32 bytes") as refused:
        create_app(McpToolsSettings(sample_db=tmp_path / "s.db", auth_token=short))  # type: ignore[arg-type]
    assert short not in str(refused.value)


def test_the_service_exits_with_a_clear_message_without_a_credential(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TOOLS_")}
    env |= {"MCP_TOOLS_SAMPLE_DB": str(tmp_path / "s.db"), "OTEL_SDK_DISABLED": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "services.mcp_tools"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "mcp-tools cannot start: MCP_TOOLS_AUTH_TOKEN is not set" in done.stderr
    assert "openssl" in done.stderr or "token_urlsafe" in done.stderr
