"""Functions and objects the Ray tests send to workers (importable there: Ray puts the
driver's working directory, the repository root, on the workers' ``sys.path``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from chia_async.distributed import ChiaFunction

#: Each test node's processes carry NODE_VAR=<node name> (set by the cluster fixture).
NODE_VAR = "CHIA_TEST_NODE"


def node_name() -> str:
    return os.environ.get(NODE_VAR, "driver")


class NodeToken:
    """A ``token_provider`` that names the node it runs on: the scripted server records the
    bearer token, so a test sees where a provider call really ran."""

    def __call__(self) -> str:
        return f"sk-node-{node_name()}-0123456789"


@ChiaFunction(resources={"openai": 0.5})
def where(tag: str) -> tuple[str, str, int]:
    return tag, node_name(), os.getpid()


@ChiaFunction()
async def where_async(tag: str, delay: float = 0.0) -> tuple[str, str]:
    await asyncio.sleep(delay)
    return tag, node_name()


@ChiaFunction(resources={"openai": 0.5})
async def count(n: int, delay: float) -> AsyncIterator[tuple[int, str]]:
    for i in range(n):
        await asyncio.sleep(delay)
        yield i, node_name()


@ChiaFunction()
def fail(message: str) -> None:
    raise ValueError(message)
