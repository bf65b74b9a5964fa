"""A real two-node Ray cluster on this machine, shared by the Ray tests of one session.

Node "a" (the head) and node "b" each have their own HOME and working directory, like two
machines; only node "b" advertises ``openai``; both advertise ``claude_code``. The cluster is
stopped right after the last test that uses it (the rest of the suite runs without a Ray
driver in the process, whose threads and sockets would blur its leak checks), at the latest
at the end of the session; the stop fails if any of its processes survived.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.helpers import NODE_VAR

NODES = {"a": {"claude_code": 4}, "b": {"openai": 4, "claude_code": 4}}


@dataclass
class RayNodes:
    cluster: Any  # chia_async.distributed.LocalCluster
    root: Path

    def home(self, name: str) -> Path:
        return self.root / name / "home"

    def work(self, name: str) -> Path:
        return self.root / name / "work"

    def pin(self, name: str) -> dict[str, float]:
        """Resources that place a call on node ``name``."""
        return self.cluster.pin(list(NODES).index(name))


_LAST_USER = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    users = [item for item in items if "ray_nodes" in getattr(item, "fixturenames", ())]
    if users:
        users[-1].stash[_LAST_USER] = True


@pytest.fixture(autouse=True)
def _stop_cluster_after_its_last_user(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.stash.get(_LAST_USER, False):
        request.getfixturevalue("ray_nodes").cluster.stop()


@pytest.fixture(scope="session")
def ray_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayNodes]:
    try:
        import ray  # noqa: F401
    except ImportError:
        message = "the ray extra is not installed: pip install -e '.[test]'"
        if os.environ.get("CI") == "true":  # CI installs it: missing is a failure there
            pytest.fail(message)
        pytest.skip(message)
    from chia_async.distributed import LocalCluster, NodeSpec

    root = tmp_path_factory.mktemp("ray-nodes")
    specs = []
    for name, resources in NODES.items():
        (root / name / "home").mkdir(parents=True)
        (root / name / "work").mkdir(parents=True)
        specs.append(
            NodeSpec(
                resources=resources,
                env={"HOME": str(root / name / "home"), NODE_VAR: name},
                cwd=str(root / name / "work"),
            )
        )
    cluster = LocalCluster(specs)
    cluster.start()
    try:
        cluster.connect()
        yield RayNodes(cluster, root)
    finally:
        cluster.stop()  # raises if any process of the cluster survived (idempotent)
