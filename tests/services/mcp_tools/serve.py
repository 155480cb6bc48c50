"""The MCP tool server's real HTTP app on a free port, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from services.mcp_tools.server import create_app
from services.mcp_tools.settings import McpToolsSettings

TOKEN = "mcp-test-credential-" + "x" * 24  # what OMNI2 would hold


@contextmanager
def serve_mcp_tools(settings: McpToolsSettings) -> Iterator[str]:
    """Yields the base URL (the MCP endpoint is at /mcp)."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the MCP tool server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(5)
