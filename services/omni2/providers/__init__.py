"""Model providers, chosen by settings: offline (default), anthropic, openai (compatible).

The SDK providers are imported only when chosen: their SDKs take over a second to import,
which an OMNI2 on the offline model (the default, and the bench's) should not pay at start.
"""

from __future__ import annotations

from importlib import import_module

from services.omni2.model import ChatModel, OfflineModel
from services.omni2.settings import Omni2Settings

# provider -> (module, class) of its SdkModel
HTTP_PROVIDERS: dict[str, tuple[str, str]] = {
    "anthropic": ("services.omni2.providers.anthropic", "AnthropicModel"),
    "openai": ("services.omni2.providers.openai", "OpenAICompatibleModel"),
}
PROVIDERS = ("offline", *HTTP_PROVIDERS)


def create_model(settings: Omni2Settings) -> ChatModel:
    provider = settings.model_provider
    if provider == "offline":
        return OfflineModel(
            name=settings.model_name, token_delay_s=settings.model_token_delay_ms / 1000
        )
    if provider in HTTP_PROVIDERS:
        module, name = HTTP_PROVIDERS[provider]
        model: ChatModel = getattr(import_module(module), name)(
            settings.model_name,
            # Each provider has its own key and base URL: OMNI2_<PROVIDER>_API_KEY / _BASE_URL.
            getattr(settings, f"{provider}_api_key"),
            base_url=getattr(settings, f"{provider}_base_url"),
            max_tokens=settings.model_max_tokens,
            timeout_s=settings.model_timeout_s,
        )
        return model
    raise ValueError(f"unknown model provider {provider!r} (available: {', '.join(PROVIDERS)})")
