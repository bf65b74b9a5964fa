"""Stream a turn's events as they happen: ``async for event in llm.stream(...)``.

    python examples/02_stream.py

Talks to OpenAI when ``OPENAI_API_KEY`` is set, else to a scripted model on loopback that
fails once with a 503 (so a ``Retrying`` event shows) and then streams its answer.
"""

import asyncio
import os

from chia_async.backends.openai_providers import OpenAILLM
from chia_async.events import Completed, Retrying, TextDelta
from chia_async.testing import Fault, ScriptedModelServer, Turn


async def stream(llm: OpenAILLM) -> None:
    async with llm.stream("Write a haiku about event loops.") as events:
        async for event in events:
            match event:
                case Retrying(attempt=attempt, delay=delay, error=error):
                    print(f"[attempt {attempt} failed: {error.kind}; retrying in {delay:.1f}s]")
                case TextDelta(text=text):
                    print(text, end="", flush=True)
                case Completed(result=result):
                    usage = result.usage
                    print(f"\n[done: {usage.input_tokens} in / {usage.output_tokens} out]")


def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        asyncio.run(stream(OpenAILLM("gpt-5-mini")))
        return
    haiku = [
        "One loop, many tasks\n",
        "await yields the turn to you\n",
        "callbacks bloom, then rest",
    ]
    with ScriptedModelServer() as server:
        server.script(
            "default",
            [Turn(fault=Fault.http(503, retry_after=0.5)), Turn(text=haiku, chunk_delay=0.1)],
        )
        asyncio.run(stream(OpenAILLM("gpt-5-mini", base_url=f"{server.url}/v1", api_key="offline")))


if __name__ == "__main__":
    main()
