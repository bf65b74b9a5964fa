"""Presets over :class:`~chia_async.backends.openai_compat.OpenAICompatLLM` for the big
OpenAI-compatible providers: each is an endpoint, a default logging name and the Ray
resource its calls require (a worker advertising it holds that provider's credential).

Auth comes from ``api_key=``, a ``token_provider``, or ``OPENAI_API_KEY``; the SDK reads
only that variable, so for another provider pass its key explicitly.
"""

from __future__ import annotations

from typing import Any, ClassVar

from chia_async.backends.openai_compat import OpenAICompatLLM

__all__ = ["FireworksLLM", "GroqLLM", "OpenAILLM", "OpenRouterLLM"]


class _OpenAICompatProvider(OpenAICompatLLM):
    default_logging_name: ClassVar[str]

    def __init__(self, model: str, **kwargs: Any) -> None:
        kwargs.setdefault("logging_name", self.default_logging_name)
        super().__init__(model, **kwargs)


class OpenAILLM(_OpenAICompatProvider):
    """OpenAI itself (the SDK's default endpoint)."""

    backend_name: ClassVar[str] = "openai"
    ray_resource: str = "openai"
    default_logging_name: ClassVar[str] = "openai_llm"


class FireworksLLM(_OpenAICompatProvider):
    """Fireworks AI."""

    backend_name: ClassVar[str] = "fireworks"
    ray_resource: str = "fireworks"
    default_logging_name: ClassVar[str] = "fireworks_llm"
    default_base_url: ClassVar[str | None] = "https://api.fireworks.ai/inference/v1"


class GroqLLM(_OpenAICompatProvider):
    """Groq."""

    backend_name: ClassVar[str] = "groq"
    ray_resource: str = "groq"
    default_logging_name: ClassVar[str] = "groq_llm"
    default_base_url: ClassVar[str | None] = "https://api.groq.com/openai/v1"


class OpenRouterLLM(_OpenAICompatProvider):
    """OpenRouter (itself a multi-provider router)."""

    backend_name: ClassVar[str] = "openrouter"
    ray_resource: str = "openrouter"
    default_logging_name: ClassVar[str] = "openrouter_llm"
    default_base_url: ClassVar[str | None] = "https://openrouter.ai/api/v1"
