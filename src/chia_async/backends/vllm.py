"""Self-hosted vLLM through its OpenAI-compatible ``/v1`` endpoint.

The default port is 8200, not vLLM's usual 8000: the low 8000s are taken by tool servers
and tunnels in the deployments this preset comes from. A vLLM server serves exactly one
model, so ``model`` must match the model it was started with (or its
``--served-model-name``). The key defaults to the dummy ``"vllm"`` (the SDK refuses an
empty one); set a real one if the server was started with ``--api-key``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from chia_async.backends.openai_compat import OpenAICompatLLM

__all__ = ["VLLMLLM"]


class VLLMLLM(OpenAICompatLLM):
    """vLLM at ``http://localhost:8200/v1`` unless ``base_url`` says otherwise."""

    backend_name: ClassVar[str] = "vllm"
    ray_resource: str = "vllm"
    default_base_url: ClassVar[str | None] = "http://localhost:8200/v1"
    default_api_key: ClassVar[str | None] = "vllm"

    def __init__(self, model: str, **kwargs: Any) -> None:
        kwargs.setdefault("logging_name", "vllm_llm")
        super().__init__(model, **kwargs)
