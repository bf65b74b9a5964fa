"""chia_async's test kit, part of the product: test your own agents offline.

* :class:`ScriptedLLM` — an in-process backend replaying scripted events and errors.
* :class:`ScriptedModelServer` — a loopback server that plays scripted model turns over the
  real wire protocols (OpenAI Chat Completions and Responses, Anthropic Messages, Gemini,
  Bedrock Converse), so real SDK clients and real coding-agent CLIs can be pointed at it.
  Also a command: ``python -m chia_async.testing serve --port N --script FILE``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chia_async._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ScriptedLLM": "chia_async.testing.scripted_llm",
    "ScriptedCall": "chia_async.testing.scripted_llm",
    "Delay": "chia_async.testing.scripted_llm",
    "Hang": "chia_async.testing.scripted_llm",
    "ScriptedModelServer": "chia_async.testing.server",
    "Script": "chia_async.testing.script",
    "Turn": "chia_async.testing.script",
    "ToolCall": "chia_async.testing.script",
    "Fault": "chia_async.testing.script",
    "ParsedRequest": "chia_async.testing.script",
    "RecordedRequest": "chia_async.testing.script",
}

__all__ = [
    "Delay",
    "Fault",
    "Hang",
    "ParsedRequest",
    "RecordedRequest",
    "Script",
    "ScriptedCall",
    "ScriptedLLM",
    "ScriptedModelServer",
    "ToolCall",
    "Turn",
]

if TYPE_CHECKING:
    from chia_async.testing.script import (
        Fault,
        ParsedRequest,
        RecordedRequest,
        Script,
        ToolCall,
        Turn,
    )
    from chia_async.testing.scripted_llm import Delay, Hang, ScriptedCall, ScriptedLLM
    from chia_async.testing.server import ScriptedModelServer


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
