"""The MCP tool server's tools, called through the SDK in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr
from services.mcp_tools.server import create_server
from services.mcp_tools.settings import McpToolsSettings


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
        result = await client.call_tool(
            "list_tables", {}, meta={"omni2/conversation_id": "c-1", "omni2/user_id": "bob"}
        )
    tables = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert tables["products"] == ["id", "name", "category", "price"]
    (server,) = [s for s in spans.get_finished_spans() if s.name == "tools/call list_tables"]
    assert server.attributes is not None
    assert server.attributes[Attr.CONVERSATION_ID] == "c-1"
    assert server.attributes[Attr.USER_ID] == "bob"
