"""The Jaeger UI's configuration: links from its trace pages to the flow view.

The stack writes it for its own Jaeger (`JAEGER_UI_CONFIG`); `omni-trace dashboards` writes
compose's copy (compose/jaeger-ui.json), where the official image serves the real UI.
"""

from __future__ import annotations

from typing import Any

from omni_trace.traces.audit import flow_view_url
from otel.names import Attr


def jaeger_ui_config(flowview_url: str) -> dict[str, Any]:
    """From a trace, a conversation id or a user to the flow view. The UI puts a tag's value
    where `#{key}` is (Jaeger's `linkPatterns`)."""
    base = flowview_url.rstrip("/")
    return {
        "linkPatterns": [
            {
                "type": "traces",
                "url": flow_view_url(base, "#{trace.traceID}"),
                "text": "This trace in the flow view: its chain verdict and session trace",
            },
            {
                "type": "tags",
                "key": Attr.CONVERSATION_ID,
                "url": f"{base}/#/conversation/#{{{Attr.CONVERSATION_ID}}}",
                "text": f"Conversation #{{{Attr.CONVERSATION_ID}}} in the flow view",
            },
            {
                "type": "tags",
                "key": Attr.USER_ID,
                "url": f"{base}/#/?user=#{{{Attr.USER_ID}}}",
                "text": f"Conversations of #{{{Attr.USER_ID}}} in the flow view",
            },
        ],
        # The Monitor tab needs Jaeger's metrics store, which this stack does not configure:
        # the hop chart is in the flow view and Grafana.
        "monitor": {"menuEnabled": False},
    }
