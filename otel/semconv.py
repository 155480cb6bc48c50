"""Which version of the GenAI conventions the services emit: `OTEL_SEMCONV_STABILITY_OPT_IN`,
read here and nowhere else.

The GenAI conventions (semconv v1.37.0 onwards, gen-ai-metrics.md "transition plan") define one
value for it, `gen_ai_latest_experimental`: emit the latest experimental version and stop
emitting the old one. Without it an instrumentation keeps what it emitted before. For us the
old name is OMNI2's own `chat.time_to_first_token`, which `gen_ai.server.time_to_first_token`
now covers; the GenAI and MCP metrics are new instruments and always on. The dashboard's
`chat.time_to_first_token` stays either way: no convention measures a relay.
"""

from __future__ import annotations

import os
from functools import cache

OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_LATEST_EXPERIMENTAL = "gen_ai_latest_experimental"


def opted_in(value: str | None) -> frozenset[str]:
    """The comma-separated categories of the variable, trimmed (unknown ones are ignored)."""
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())


@cache
def gen_ai_latest_experimental() -> bool:
    """True when the process asked for the latest experimental GenAI conventions only."""
    return GEN_AI_LATEST_EXPERIMENTAL in opted_in(os.environ.get(OPT_IN))


# Tables kept from the conventions (semconv v1.41.0: model/mcp/registry.yaml,
# docs/registry/attributes/gen-ai.md and mcp.md, model/gen-ai/deprecated/registry-deprecated.yaml).
CONVENTION_VERSION = "v1.41.0"

# `mcp.method.name`'s well-known values.
MCP_METHODS = frozenset(
    (
        "notifications/cancelled",
        "initialize",
        "notifications/initialized",
        "notifications/progress",
        "ping",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "notifications/resources/list_changed",
        "resources/subscribe",
        "resources/unsubscribe",
        "notifications/resources/updated",
        "prompts/list",
        "prompts/get",
        "notifications/prompts/list_changed",
        "tools/list",
        "tools/call",
        "notifications/tools/list_changed",
        "logging/setLevel",
        "notifications/message",
        "sampling/createMessage",
        "completion/complete",
        "roots/list",
        "notifications/roots/list_changed",
        "elicitation/create",
    )
)

# Attribute keys of the GenAI and MCP registries that are not deprecated.
GEN_AI_MCP_ATTRIBUTES = frozenset(
    (
        "gen_ai.agent.description",
        "gen_ai.agent.id",
        "gen_ai.agent.name",
        "gen_ai.agent.version",
        "gen_ai.conversation.id",
        "gen_ai.data_source.id",
        "gen_ai.embeddings.dimension.count",
        "gen_ai.evaluation.explanation",
        "gen_ai.evaluation.name",
        "gen_ai.evaluation.score.label",
        "gen_ai.evaluation.score.value",
        "gen_ai.input.messages",
        "gen_ai.operation.name",
        "gen_ai.output.messages",
        "gen_ai.output.type",
        "gen_ai.prompt.name",
        "gen_ai.provider.name",
        "gen_ai.request.choice.count",
        "gen_ai.request.encoding_formats",
        "gen_ai.request.frequency_penalty",
        "gen_ai.request.max_tokens",
        "gen_ai.request.model",
        "gen_ai.request.presence_penalty",
        "gen_ai.request.seed",
        "gen_ai.request.stop_sequences",
        "gen_ai.request.stream",
        "gen_ai.request.temperature",
        "gen_ai.request.top_k",
        "gen_ai.request.top_p",
        "gen_ai.response.finish_reasons",
        "gen_ai.response.id",
        "gen_ai.response.model",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.retrieval.documents",
        "gen_ai.retrieval.query.text",
        "gen_ai.system_instructions",
        "gen_ai.token.type",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.id",
        "gen_ai.tool.call.result",
        "gen_ai.tool.definitions",
        "gen_ai.tool.description",
        "gen_ai.tool.name",
        "gen_ai.tool.type",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.workflow.name",
        "mcp.method.name",
        "mcp.protocol.version",
        "mcp.resource.uri",
        "mcp.session.id",
    )
)

# Deprecated keys and what replaces them (None: removed, no replacement).
DEPRECATED_ATTRIBUTES: dict[str, str | None] = {
    "gen_ai.system": "gen_ai.provider.name",
    "gen_ai.usage.prompt_tokens": "gen_ai.usage.input_tokens",
    "gen_ai.usage.completion_tokens": "gen_ai.usage.output_tokens",
    "gen_ai.prompt": None,  # "use Event API to report prompt contents"
    "gen_ai.completion": None,
    "gen_ai.openai.request.seed": "gen_ai.request.seed",
    "gen_ai.openai.request.response_format": "gen_ai.output.type",
    "gen_ai.openai.request.service_tier": "openai.request.service_tier",
    "gen_ai.openai.response.service_tier": "openai.response.service_tier",
    "gen_ai.openai.response.system_fingerprint": "openai.response.system_fingerprint",
}
