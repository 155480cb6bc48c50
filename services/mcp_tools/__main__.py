"""MCP tool server: `python -m services.mcp_tools` (streamable HTTP at /mcp)."""

import sys

import uvicorn

from otel import Service, setup_tracing
from otel.logs import logging_config
from services.mcp_tools.server import create_app
from services.mcp_tools.settings import McpToolsSettings, MissingCredential

settings = McpToolsSettings()
setup_tracing(Service.MCP_TOOLS)
try:
    app = create_app(settings)
except MissingCredential as err:
    sys.exit(f"mcp-tools cannot start: {err}")
uvicorn.run(
    app,
    host=settings.host,
    port=settings.port,
    log_config=logging_config(settings.log_level.upper()),
    timeout_graceful_shutdown=2,
    proxy_headers=False,
)
