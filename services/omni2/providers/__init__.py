"""Model providers, chosen by settings: offline (default), anthropic, openai (compatible)."""

from __future__ import annotations

from services.omni2.model import ChatModel, OfflineModel
from services.omni2.providers.anthropic import AnthropicModel
from services.omni2.providers.http import StreamingHttpModel
from services.omni2.providers.openai import OpenAICompatibleModel
from services.omni2.settings import Omni2Settings

HTTP_PROVIDERS: dict[str, type[StreamingHttpModel]] = {
    "anthropic": AnthropicModel,
    "openai": OpenAICompatibleModel,
}
PROVIDERS = ("offline", *HTTP_PROVIDERS)


def create_model(settings: Omni2Settings) -> ChatModel:
    provider = settings.model_provider
    if provider == "offline":
        return OfflineModel(
            name=settings.model_name, token_delay_s=settings.model_token_delay_ms / 1000
        )
    if provider in HTTP_PROVIDERS:
        # Each provider has its own key and base URL: OMNI2_<PROVIDER>_API_KEY / _BASE_URL.
        return HTTP_PROVIDERS[provider](
            settings.model_name,
            getattr(settings, f"{provider}_api_key"),
            base_url=getattr(settings, f"{provider}_base_url"),
            max_tokens=settings.model_max_tokens,
            timeout_s=settings.model_timeout_s,
        )
    raise ValueError(f"unknown model provider {provider!r} (available: {', '.join(PROVIDERS)})")
