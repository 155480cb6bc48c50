"""The stack file names the chat page, and older stack files (without it) still read."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omni_trace.ports import Ports
from omni_trace.settings import StackSettings
from omni_trace.stack import Stack, StackInfo, stack_summary


def test_stack_file_has_the_frontend_url(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports(frontend=3999), StackSettings(), progress=lambda _: None)
    assert stack.info.frontend_url == "http://127.0.0.1:3999"
    path = tmp_path / "stack.json"
    stack.info.write(path)
    assert json.loads(path.read_text())["frontend_url"] == "http://127.0.0.1:3999"
    assert StackInfo.read(path) == stack.info
    summary = stack_summary(stack.info)
    assert summary["chat page (browser)"] == "http://127.0.0.1:3999"
    assert summary["WebSocket test page"] == "http://127.0.0.1:3999/test_ws_chat.html"


def test_default_frontend_port_is_the_seeds() -> None:
    assert Ports().frontend == 3001


def test_a_stack_file_from_before_the_page_still_reads(tmp_path: Path) -> None:
    info = Stack(tmp_path, Ports(), StackSettings(), progress=lambda _: None).info
    old = {k: v for k, v in asdict(info).items() if k != "frontend_url"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert StackInfo.read(path).frontend_url == ""
