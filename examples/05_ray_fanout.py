"""Fan many calls out over a Ray cluster: each call runs as a Ray task on a node that
advertises the provider's credential resource (OpenAILLM asks for ``openai``).

    python examples/05_ray_fanout.py

With ``RAY_ADDRESS`` set it joins that cluster (nodes started with
``--resources '{"openai": 4}'``) and calls OpenAI with the workers' ``OPENAI_API_KEY``.
Otherwise it starts a throwaway two-node cluster on this machine and a scripted model on
loopback. Needs Ray: ``pip install 'chia-async[ray]'``.
"""

import asyncio
import os
import re
import time

try:
    import ray
except ImportError:
    print("skipped: Ray is not installed (pip install 'chia-async[ray]')")
    raise SystemExit(0) from None

from chia_async.backends.openai_providers import OpenAILLM
from chia_async.distributed import LocalCluster, NodeSpec
from chia_async.testing import ParsedRequest, ScriptedModelServer, Turn

QUESTIONS = [f"What is {n} squared? Just the number." for n in range(1, 5)]


async def fan_out(llm: OpenAILLM) -> None:
    started = time.monotonic()
    # chia_remote takes the instance explicitly: prompt is the class's function
    calls = [llm.prompt.chia_remote(llm, question) for question in QUESTIONS]
    results = await asyncio.gather(*calls)
    for question, result in zip(QUESTIONS, results, strict=True):
        print(f"{question} -> {result.result}")
    print(f"{len(results)} calls on {len(ray.nodes())} nodes in {time.monotonic() - started:.1f}s")


def scripted_model(request: ParsedRequest) -> Turn:
    n = int(re.findall(r"\d+", request.last_user_text)[0])
    return Turn(text=str(n * n), latency=0.5)  # a slow model: the calls overlap


def main() -> None:
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        asyncio.run(fan_out(OpenAILLM("gpt-5-mini")))
        return
    nodes = [NodeSpec(resources={"openai": 2}), NodeSpec(resources={"openai": 2})]
    with ScriptedModelServer() as server, LocalCluster(nodes) as cluster:
        server.script("default", scripted_model)
        cluster.connect()
        llm = OpenAILLM("gpt-5-mini", base_url=f"{server.url}/v1", api_key="offline")
        asyncio.run(fan_out(llm))


if __name__ == "__main__":
    main()
