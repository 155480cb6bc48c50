"""Model providers, chosen by settings: offline (default), anthropic, openai (compatible)."""

from __future__ import annotations

from services.omni2.model import ChatModel, OfflineModel
from services.omni2.settings import Omni2Settings

PROVIDERS = ("offline", "anthropic", "openai")


def create_model(settings: Omni2Settings) -> ChatModel:
    provider = settings.model_provider
    if provider == "offline":
        return OfflineModel(
            name=settings.model_name, token_delay_s=settings.model_token_delay_ms / 1000
        )
    raise ValueError(f"unknown model provider {provider!r} (available: {', '.join(PROVIDERS)})")
