"""Fan-out on Ray: N scripted provider calls dispatched across a local cluster, against the
same calls run locally, and the per-call dispatch overhead.

    python bench/ray_fanout.py [--calls 32] [--latency 0.25] [--slots 4] [--nodes 2]

Starts a LocalCluster of ``--nodes`` nodes on this machine, each advertising ``openai`` =
``--slots`` (so ``nodes * slots`` calls are in flight at once), and a ScriptedModelServer in
this process whose every turn waits ``--latency`` seconds before answering. Rows:

1. wall time of ``--calls`` OpenAICompatLLM calls with ``nodes * slots`` in flight: locally
   (``aprompt`` under a semaphore) and through ``prompt.chia_remote`` (Ray schedules them
   on the nodes' ``openai`` slots), after warm-up rounds that start a worker per slot;
2. per-call dispatch overhead: median latency of one remote call minus that of the same
   local call (zero server latency), sampled alternately so load weighs on both alike.

The cluster's start-up is reported but counted in neither row.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter

from chia_async.backends.openai_compat import OpenAICompatLLM
from chia_async.distributed import LocalCluster, NodeSpec
from chia_async.testing import ScriptedModelServer, Turn


class WhereToken:
    """token_provider naming the worker's node, so the server sees where each call ran."""

    def __call__(self) -> str:
        import os

        return f"sk-bench-{os.environ.get('BENCH_NODE', 'local')}"


def make_llm(server: ScriptedModelServer, script: str) -> OpenAICompatLLM:
    return OpenAICompatLLM(
        "bench-model",
        base_url=server.base_url(script) + "/v1",
        token_provider=WhereToken(),
        retries=0,
        timeout_seconds=120,
    )


async def fan_out_local(llm: OpenAICompatLLM, calls: int, in_flight: int) -> float:
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            assert (await llm.aprompt("hi")).success

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return time.perf_counter() - started


async def fan_out_remote(llm: OpenAICompatLLM, calls: int) -> float:
    started = time.perf_counter()
    remote = llm.prompt.chia_remote  # type: ignore[attr-defined]
    results = await asyncio.gather(*(remote(llm, "hi") for _ in range(calls)))
    elapsed = time.perf_counter() - started
    assert all(r.success for r in results)
    return elapsed


async def overhead(llm: OpenAICompatLLM, samples: int) -> tuple[float, float]:
    local: list[float] = []
    remote: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        await llm.aprompt("hi")
        local.append(time.perf_counter() - started)
        started = time.perf_counter()
        await llm.prompt.chia_remote(llm, "hi")  # type: ignore[attr-defined]
        remote.append(time.perf_counter() - started)
    return statistics.median(local), statistics.median(remote)


async def run(args: argparse.Namespace, server: ScriptedModelServer) -> None:
    in_flight = args.nodes * args.slots
    server.script("slow", [Turn(text="fan-out answer", latency=args.latency)], repeat=True)
    server.script("fast", [Turn(text="overhead answer")], repeat=True)
    slow, fast = make_llm(server, "slow"), make_llm(server, "fast")

    for _ in range(3):  # warm-up: Ray starts the workers as demand shows
        await fan_out_remote(slow, in_flight)
    await fan_out_local(slow, in_flight, in_flight)
    before = len(server.requests("slow"))
    local_walls, remote_walls = [], []
    for _ in range(args.repeats):  # alternately, so load from elsewhere weighs on both
        local_walls.append(await fan_out_local(slow, args.calls, in_flight))
        remote_walls.append(await fan_out_remote(slow, args.calls))
    local_wall, remote_wall = statistics.median(local_walls), statistics.median(remote_walls)
    placed = Counter(
        r.headers["authorization"].removeprefix("Bearer sk-bench-")
        for r in server.requests("slow")[before:]
    )
    placed.pop("local", None)
    local_call, remote_call = await overhead(fast, args.samples)

    ideal = args.calls / in_flight * args.latency
    latency_ms = args.latency * 1000
    print(f"  {args.calls} calls, {in_flight} in flight, server latency {latency_ms:.0f} ms")
    print(f"  (ideal wall time {ideal:.2f} s)")
    print(f"  median of {args.repeats} runs each:")
    print(f"  local   (asyncio, one process):  {local_wall:6.2f} s")
    ratio = remote_wall / local_wall
    print(f"  cluster (prompt.chia_remote):    {remote_wall:6.2f} s   ({ratio:.2f}x local)")
    print(f"  remote calls per node: {dict(sorted(placed.items()))}")
    print(
        f"  per-call dispatch overhead: {(remote_call - local_call) * 1000:.1f} ms "
        f"(median of {args.samples}: remote {remote_call * 1000:.1f} ms, "
        f"local {local_call * 1000:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--slots", type=int, default=4, help="openai slots per node")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=20, help="calls for the overhead row")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fan-out")
    args = parser.parse_args()

    started = time.perf_counter()
    nodes = [
        NodeSpec(resources={"openai": args.slots}, env={"BENCH_NODE": f"node{i}"})
        for i in range(args.nodes)
    ]
    # A worker per slot, kept warm: Ray keeps as many idle workers as a node has CPUs (one
    # here, as on no real cluster) and starts them one at a time per CPU.
    warm = {
        "num_workers_soft_limit": 2 * args.slots,
        "worker_maximum_startup_concurrency": args.slots,
        "idle_worker_killing_time_threshold_ms": 60_000,
    }
    with LocalCluster(nodes, system_config=warm) as cluster, ScriptedModelServer() as server:
        cluster.connect()
        print(f"ray fan-out: {args.nodes} nodes x openai={args.slots}")
        print(f"  cluster start: {time.perf_counter() - started:.1f} s (not counted)")
        asyncio.run(run(args, server))


if __name__ == "__main__":
    main()
