"""``LocalCluster``: a throwaway multi-node Ray cluster on this machine, for tests and benchmarks.

Each node is a real ``ray start --block`` (head first, then the others joining it), with its
own custom resources, environment (e.g. its own ``HOME``) and working directory, so
``chia_remote`` scheduling, cross-node sessions and cancellation are exercised as on a real
cluster::

    with LocalCluster([NodeSpec(), NodeSpec(resources={"openai": 8})]) as cluster:
        cluster.connect()                      # ray.init() of this process, all nodes up
        result = await llm.prompt.chia_remote(llm, "hi")

Everything stays on loopback (node ``i`` is ``127.0.0.{i + 2}``, ports picked free), under a
private temporary directory, with the dashboard off and usage stats disabled; the nodes and
the driver use the same, explicit auth mode. ``stop()`` ends exactly this cluster's
processes: every node's process group, then any process still carrying the cluster's marker
variable, by pid. (``ray stop`` is not used: it kills every Ray process on the machine,
found by name.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from chia_async.extras import require

__all__ = ["LocalCluster", "NodeSpec"]

#: The environment variable that marks every process of one LocalCluster.
MARKER_VAR = "CHIA_LOCAL_RAY_CLUSTER"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node of a :class:`LocalCluster`.

    ``resources`` are its custom resources; ``env`` is added to its processes' environment
    (Ray workers inherit it: a different ``HOME`` per node makes it "another machine" for a
    CLI); ``cwd`` is the directory ``ray start`` runs in.
    """

    resources: Mapping[str, float] = field(default_factory=dict)
    num_cpus: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass
class _Node:
    spec: NodeSpec
    ip: str
    node_manager_port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None


class LocalCluster:
    """A Ray cluster of ``nodes`` on this machine (the first is the head); see the module
    docstring.

    ``root`` is where Ray keeps its session (logs, sockets); a fresh temporary directory by
    default, removed by :meth:`stop` unless ``keep_logs``. ``auth_mode`` is set explicitly
    for every node and the driver (``RAY_AUTH_MODE``; default: this process's value, else
    ``"disabled"``): a head and a joining node disagreeing on it fail to talk.
    ``system_config`` overrides Ray's cluster-wide defaults, e.g.
    ``{"num_workers_soft_limit": 8}`` to keep 8 idle workers per node warm (Ray's default
    keeps as many as the node has CPUs, and a LocalCluster node has one).
    """

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        *,
        root: str | os.PathLike[str] | None = None,
        object_store_bytes: int = 80 * 1024 * 1024,
        start_timeout: float = 90.0,
        auth_mode: str | None = None,
        keep_logs: bool = False,
        system_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        if len(nodes) > 250:
            raise ValueError("at most 250 nodes (one loopback address each)")
        self.marker = uuid.uuid4().hex
        self._own_root = root is None
        # Ray puts Unix sockets under the root: keep the path short (sun_path is 108 bytes)
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="cr-"))
        self.object_store_bytes = object_store_bytes
        self.start_timeout = start_timeout
        self.auth_mode = auth_mode or os.environ.get("RAY_AUTH_MODE") or "disabled"
        self.keep_logs = keep_logs
        self.system_config = dict(system_config or {})
        self._nodes = [
            _Node(spec, ip=f"127.0.0.{index + 2}", node_manager_port=0)
            for index, spec in enumerate(nodes)
        ]
        self.port = 0
        self._connected = False
        self._stopped = False

    # -- facts --------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The head's GCS address, ``127.0.0.2:PORT``."""
        return f"{self._nodes[0].ip}:{self.port}"

    @property
    def node_ips(self) -> list[str]:
        """The loopback address of each node, in the order given (the head first)."""
        return [node.ip for node in self._nodes]

    def pin(self, index: int) -> dict[str, float]:
        """Resources that place a call on node ``index`` (Ray's ``node:<ip>`` resource)."""
        return {f"node:{self._nodes[index].ip}": 0.001}

    def processes(self) -> list[int]:
        """Live processes of this cluster (carrying its marker), by pid."""
        return marked_processes(MARKER_VAR, self.marker)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every node and wait until each one's raylet accepts connections."""
        try:
            self._start()
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        head = self._nodes[0]
        self.port = free_port(head.ip)
        deadline = time.monotonic() + self.start_timeout
        for index, node in enumerate(self._nodes):
            node.node_manager_port = free_port(node.ip)
            argv = self._argv(index, node)
            node.log = self.root / f"node-{index}.log"
            with open(node.log, "wb") as log:
                node.process = subprocess.Popen(
                    argv,
                    env=self._env(node),
                    cwd=node.spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # one process group per node: stop() ends it
                )
            if index == 0:  # the others join through the head's GCS
                self._wait_port(node, head.ip, self.port, deadline)
        for node in self._nodes:
            self._wait_port(node, node.ip, node.node_manager_port, deadline)

    def _argv(self, index: int, node: _Node) -> list[str]:
        script = Path(sys.executable).with_name("ray")
        if script.exists():
            argv = [str(script)]
        else:  # ray's console script is not beside this interpreter
            argv = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
        argv += ["start", "--block", "--log-style", "record"]
        if index == 0:
            argv += [
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard",
                "false",
                "--no-monitor",  # no autoscaler: the cluster's shape is fixed
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(free_port("127.0.0.1")),
            ]
            if self.system_config:
                argv += ["--system-config", json.dumps(self.system_config)]
        else:
            argv += ["--address", self.address]
        argv += [
            "--node-ip-address",
            node.ip,
            "--num-cpus",
            str(node.spec.num_cpus),
            "--object-store-memory",
            str(self.object_store_bytes),
            "--temp-dir",
            str(self.root),
            "--disable-usage-stats",
            "--include-log-monitor",
            "false",
            "--node-manager-port",
            str(node.node_manager_port),
            "--object-manager-port",
            str(free_port(node.ip)),
            "--dashboard-agent-listen-port",
            str(free_port(node.ip)),
            "--dashboard-agent-grpc-port",
            str(free_port(node.ip)),
            "--runtime-env-agent-port",
            str(free_port(node.ip)),
            "--metrics-export-port",
            str(free_port(node.ip)),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
        ]
        if node.spec.resources:
            argv += ["--resources", json.dumps(dict(node.spec.resources))]
        return argv

    def _env(self, node: _Node) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(
            {
                "RAY_AUTH_MODE": self.auth_mode,
                "RAY_USAGE_STATS_ENABLED": "0",
                MARKER_VAR: self.marker,
            }
        )
        env.update(node.spec.env)
        return env

    def _wait_port(self, node: _Node, host: str, port: int, deadline: float) -> None:
        while True:
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return
            assert node.process is not None
            if node.process.poll() is not None:
                raise RuntimeError(
                    f"ray start for {node.ip} exited with {node.process.returncode}:\n"
                    + self._log_tail(node)
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Ray node at {node.ip} did not come up within {self.start_timeout:g} s:\n"
                    + self._log_tail(node)
                )
            time.sleep(0.1)

    def _log_tail(self, node: _Node) -> str:
        try:
            return (node.log.read_text(errors="replace") if node.log else "")[-3000:]
        except OSError:
            return ""

    def connect(self, **init_kwargs: Any) -> None:
        """``ray.init()`` this process as a driver of the cluster; wait until every node is up.

        Sets ``RAY_AUTH_MODE`` in this process's environment to the cluster's mode.
        """
        ray = require("ray", "ray", feature="LocalCluster")
        os.environ["RAY_AUTH_MODE"] = self.auth_mode
        init_kwargs.setdefault("log_to_driver", False)
        init_kwargs.setdefault("configure_logging", False)
        ray.init(address=self.address, _node_ip_address=self._nodes[0].ip, **init_kwargs)
        self._connected = True
        deadline = time.monotonic() + self.start_timeout
        while True:
            alive = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
            if alive >= set(self.node_ips):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {sorted(alive)} of {self.node_ips} joined the cluster "
                    f"within {self.start_timeout:g} s"
                )
            time.sleep(0.1)

    def stop(self, *, grace: float = 3.0, check: bool = True) -> None:
        """Disconnect, end every process of this cluster, and remove its directory.

        Each node's process group gets SIGTERM, then (after ``grace`` seconds) SIGKILL; any
        process still carrying the cluster's marker is then killed by pid. With ``check``,
        raises ``RuntimeError`` naming any process that survived all of that. Calling it
        again is harmless.
        """
        if self._stopped and not self.processes():
            return
        self._stopped = True
        if self._connected:
            self._connected = False
            with contextlib.suppress(Exception):
                require("ray", "ray", feature="LocalCluster").shutdown()
        for node in reversed(self._nodes):
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        for node in self._nodes:
            if node.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(node.process.pid, signal.SIGKILL)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for node in self._nodes:
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=5)
        deadline = time.monotonic() + 5
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.processes()
        if self._own_root and not self.keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)
        if left and check:
            raise RuntimeError(f"processes of the Ray cluster survived stop(): {describe(left)}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(check=exc is None)


# -- processes ---------------------------------------------------------------------------------


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def marked_processes(variable: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has ``variable=value``."""
    needle = f"{variable}={value}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def describe(pids: Sequence[int]) -> list[str]:
    """``pid: command line`` for each of ``pids``."""
    out = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = "?"
        out.append(f"{pid}: {cmdline.strip()[:200]}")
    return out
