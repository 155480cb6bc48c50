"""A span processor for spans that libraries start inside our traces (the MCP SDK's).

- A span started below one of ours, in the same process, inherits `gen_ai.conversation.id`
  and `user.id` when it has none, so every span of a message trace carries the conversation.
- The MCP SDK names its client span `MCP send <method> <target>`; the MCP semantic
  conventions name it `<method> <target>` (like the server side), so it is renamed.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel.names import Attr

MCP_SDK_SCOPE = "mcp-python-sdk"
_MCP_CLIENT_PREFIX = "MCP send "
INHERITED = (Attr.CONVERSATION_ID, Attr.USER_ID)


class InheritAttributesProcessor(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = trace.get_current_span(parent_context)
        if isinstance(parent, ReadableSpan) and parent.attributes:
            own = span.attributes or {}
            for key in INHERITED:
                if key not in own and key in parent.attributes:
                    span.set_attribute(key, parent.attributes[key])
        scope = span.instrumentation_scope
        if (
            scope is not None
            and scope.name == MCP_SDK_SCOPE
            and span.name.startswith(_MCP_CLIENT_PREFIX)
        ):
            span.update_name(span.name.removeprefix(_MCP_CLIENT_PREFIX))

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
