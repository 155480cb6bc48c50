"""Our services emit no span name, attribute, event or link attribute outside the table."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, open_chat
from omni_trace.stack.demo import message_trace_complete
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import TraceFetcher
from omni_trace.traces.jaeger import JaegerClient
from otel.names import ATTRIBUTES, OWN_SERVICES, Service, documented_event, documented_span

pytestmark = pytest.mark.stack


async def test_services_emit_only_documented_telemetry(
    stack: Stack,
    omni_tracer_provider: TracerProvider,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
    omni_chat: ChatFactory,
) -> None:
    # Traffic that exercises every code path we trace: login, chat, a malformed frame,
    # a refused token.
    async with omni_chat("alice") as c:
        reply = await c.send("table check")
        await c.send_raw("not json")
    with pytest.raises(ChatRefused):
        async with open_chat(
            stack.info.dashboard_ws_url, "bad", tracer_provider=omni_tracer_provider
        ):
            pass
    omni_traces.wait(reply.trace_id, message_trace_complete, what="the message chain")

    checked: dict[str, int] = {}
    problems: set[str] = set()
    for service in sorted(set(omni_jaeger.services()) & set(OWN_SERVICES)):
        for trace_id in omni_jaeger.find_trace_ids(service, lookback="2h", limit=2000):
            for span in omni_jaeger.get_trace(trace_id):
                if span.service != service:
                    continue
                checked[service] = checked.get(service, 0) + 1
                if documented_span(span.service, span.name) is None:
                    problems.add(f"span {span.service} {span.name!r}")
                problems |= {
                    f"attribute {k!r} on {span.name!r}"
                    for k in span.attributes
                    if k not in ATTRIBUTES
                }
                problems |= {
                    f"event {e!r} on {span.name!r}"
                    for e in span.event_names
                    if not documented_event(e)
                }
                problems |= {
                    f"attribute {k!r} of event {e.name!r}"
                    for e in span.events
                    for k in e.attributes
                    if k not in ATTRIBUTES
                }
                problems |= {
                    f"link attribute {k!r} on {span.name!r}"
                    for link in span.links
                    for k in link.attributes
                    if k not in ATTRIBUTES
                }
    assert set(checked) >= {Service.CHAT_CLIENT, Service.DASHBOARD, Service.AUTH, Service.OMNI2}
    assert sum(checked.values()) >= 15, checked
    assert not problems, "undocumented telemetry (add it to otel/names.py):\n" + "\n".join(
        sorted(problems)
    )
