"""Model providers, chosen by settings: offline (default), anthropic, openai (compatible)."""

from __future__ import annotations

from services.omni2.model import ChatModel, OfflineModel
from services.omni2.settings import Omni2Settings

PROVIDERS = ("offline", "anthropic", "openai")


def create_model(settings: Omni2Settings) -> ChatModel:
    provider = settings.model_provider
    if provider == "anthropic":
        from services.omni2.providers.anthropic import AnthropicModel

        return AnthropicModel(
            settings.model_name,
            settings.anthropic_api_key,
            base_url=settings.anthropic_base_url,
            max_tokens=settings.model_max_tokens,
            timeout_s=settings.model_timeout_s,
        )
    if provider == "openai":
        from services.omni2.providers.openai import OpenAICompatibleModel

        return OpenAICompatibleModel(
            settings.model_name,
            settings.openai_api_key,
            base_url=settings.openai_base_url,
            max_tokens=settings.model_max_tokens,
            timeout_s=settings.model_timeout_s,
        )
    if provider == "offline":
        return OfflineModel(
            name=settings.model_name, token_delay_s=settings.model_token_delay_ms / 1000
        )
    raise ValueError(f"unknown model provider {provider!r} (available: {', '.join(PROVIDERS)})")
