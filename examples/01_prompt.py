"""One call, one answer: ``llm.prompt()`` from plain synchronous code.

    python examples/01_prompt.py

Talks to OpenAI when ``OPENAI_API_KEY`` is set, else to a scripted model on loopback.
"""

import os

from chia_async.backends.openai_providers import OpenAILLM
from chia_async.testing import ScriptedModelServer, Turn

QUESTION = "What is the capital of France? Answer in one sentence."


def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        ask(OpenAILLM("gpt-5-mini"))
        return
    with ScriptedModelServer() as server:
        server.script("default", [Turn(text="The capital of France is Paris.")])
        ask(OpenAILLM("gpt-5-mini", base_url=f"{server.url}/v1", api_key="offline"))


def ask(llm: OpenAILLM) -> None:
    result = llm.prompt(QUESTION)  # blocks; works in scripts, notebooks and threads alike
    print(result.result)
    print(f"success={result.success} tokens={result.usage.total_tokens}")


if __name__ == "__main__":
    main()
