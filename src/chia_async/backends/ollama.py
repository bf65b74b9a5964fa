"""Self-hosted Ollama through its OpenAI-compatible ``/v1`` endpoint.

Ollama needs no credential, but the openai SDK refuses an empty key, so the key defaults
to the conventional dummy ``"ollama"`` (override with ``api_key`` / ``token_provider``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from chia_async.backends.openai_compat import OpenAICompatLLM

__all__ = ["OllamaLLM"]


class OllamaLLM(OpenAICompatLLM):
    """Ollama at ``http://localhost:11434/v1`` unless ``base_url`` says otherwise.

    ``model`` is an Ollama tag that the server has already pulled (e.g. ``"llama3.1:8b"``).
    """

    backend_name: ClassVar[str] = "ollama"
    ray_resource: str = "ollama"
    default_base_url: ClassVar[str | None] = "http://localhost:11434/v1"
    default_api_key: ClassVar[str | None] = "ollama"

    def __init__(self, model: str, **kwargs: Any) -> None:
        kwargs.setdefault("logging_name", "ollama_llm")
        super().__init__(model, **kwargs)
