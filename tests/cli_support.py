"""Fixtures for the CLI conformance tests: real coding-agent CLIs against the scripted server.

Everything here is hermetic: each CLI runs with a scratch ``HOME`` (under ``tmp_path``), an
environment built from scratch (no inherited API keys, no ``CLAUDECODE``), stdin from
``/dev/null``, in its own session (``start_new_session=True``) with a hard timeout that kills the
whole process group. After every run the test checks that nothing of that session is left.

The CLIs are found in ``.ci-cache/npm/bin`` (see ``.ci/install-clis``), else on ``PATH``; an
explicit ``CHIA_<CLI>_BIN`` env var (``CHIA_CLAUDE_BIN``, ``CHIA_CODEX_BIN``, ``CHIA_OPENCODE_BIN``,
``CHIA_GEMINI_BIN``) replaces both. A missing CLI, or one at another version than the pinned
one, skips its tests with a message that names the install command (``CHIA_CONFORMANCE_REQUIRE=1``
turns that skip into a failure, for CI jobs that installed the CLIs).
``CHIA_CONFORMANCE_DUMP=<dir>`` writes every CLI run (argv, env, exit, stdout events, stderr)
and every request the scripted server recorded to ``<dir>``, for debugging.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI_PREFIX_BIN = REPO_ROOT / ".ci-cache" / "npm" / "bin"
INSTALL_HINT = "run .ci/install-clis"
#: Every CLI run gets a unique value of this variable, to find its descendants in /proc.
RUN_MARKER_VAR = "CHIA_CONFORMANCE_RUN"

#: Hard wall-clock limit for one CLI run. Every scripted run finishes in a few seconds
#: (opencode is the slowest: ~3-4 s of start-up before its first model request).
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class CliSpec:
    name: str  # claude | codex | opencode | gemini
    binary: str  # executable name
    version: str  # pinned version (must appear in `--version` output)
    env_var: str  # explicit override, e.g. CHIA_CLAUDE_BIN


CLIS: dict[str, CliSpec] = {
    "claude": CliSpec("claude", "claude", "2.1.197", "CHIA_CLAUDE_BIN"),
    "codex": CliSpec("codex", "codex", "0.169.0", "CHIA_CODEX_BIN"),
    "opencode": CliSpec("opencode", "opencode", "1.18.33", "CHIA_OPENCODE_BIN"),
    "gemini": CliSpec("gemini", "gemini", "0.61.0", "CHIA_GEMINI_BIN"),
}


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def _node_dir() -> str | None:
    node = shutil.which("node")
    return str(Path(node).parent) if node else None


def _search_path(extra: Sequence[str] = ()) -> str:
    """PATH for the CLIs: the install prefix, node (codex and gemini are node scripts), system."""
    parts = [*extra, str(CLI_PREFIX_BIN)]
    node_dir = _node_dir()
    if node_dir:
        parts.append(node_dir)
    parts += ["/usr/local/bin", "/usr/bin", "/bin"]
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return ":".join(seen)


def minimal_env(home: Path, tmpdir: Path, cwd: Path | None = None, **extra: str) -> dict[str, str]:
    """An environment built from scratch: never the caller's keys, tokens or CLAUDECODE."""
    env = {
        "PATH": _search_path(),
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "USER": "conformance",
        "LOGNAME": "conformance",
        "SHELL": "/bin/bash",
    }
    if cwd is not None:
        env["PWD"] = str(cwd)  # opencode takes its project directory from $PWD, not the cwd
    env.update(extra)
    return env


@dataclass
class Sandbox:
    """Per-test scratch directories: HOME, TMPDIR and the working directory the CLI runs in."""

    root: Path
    home: Path
    tmp: Path
    work: Path

    def env(self, **extra: str) -> dict[str, str]:
        return minimal_env(self.home, self.tmp, self.work, **extra)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    home, tmp, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for d in (home, tmp, work):
        d.mkdir()
    return Sandbox(root=tmp_path, home=home, tmp=tmp, work=work)


# --------------------------------------------------------------------------------------------
# Locating the CLIs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliBinary:
    spec: CliSpec
    path: str
    version_output: str


@cache
def _probe(name: str) -> CliBinary | str:
    """Find and version-check a CLI once per session. Returns the binary or a skip reason.

    ``$CHIA_<CLI>_BIN``, when set, is the only candidate (an explicit choice must not silently
    fall back to another binary); otherwise ``.ci-cache/npm/bin`` and then ``PATH``.
    """
    spec = CLIS[name]
    candidates: list[tuple[str, str]] = []
    override = os.environ.get(spec.env_var)
    if override:
        candidates.append((override, f"${spec.env_var}"))
    else:
        local = CLI_PREFIX_BIN / spec.binary
        if local.exists():
            candidates.append((str(local), str(CLI_PREFIX_BIN)))
        on_path = shutil.which(spec.binary)
        if on_path and Path(on_path) != local:
            candidates.append((on_path, "PATH"))
    if not candidates:
        return f"{name} CLI not installed: {INSTALL_HINT}"
    problems = []
    for path, origin in candidates:
        with tempfile.TemporaryDirectory(prefix=f"chia-{name}-version-") as scratch:
            try:
                run = run_cli(
                    [path, "--version"],
                    env=minimal_env(Path(scratch), Path(scratch)),
                    cwd=Path(scratch),
                    timeout=60,
                )
            except OSError as exc:
                problems.append(f"{path} ({origin}): {exc}")
                continue
        if run.returncode == 0 and spec.version in run.stdout:
            return CliBinary(spec, path, run.stdout.strip())
        out = (run.stdout + run.stderr).strip()
        status = "timed out" if run.timed_out else f"exit {run.returncode}"
        problems.append(f"{path} ({origin}) {status}: {out[:200]!r}")
    return f"{name} CLI {spec.version} not installed (found: {'; '.join(problems)}): {INSTALL_HINT}"


def require_cli(name: str) -> CliBinary:
    """The CLI, or skip; with ``CHIA_CONFORMANCE_REQUIRE=1`` (for CI) a missing CLI fails."""
    found = _probe(name)
    if isinstance(found, str):
        if os.environ.get("CHIA_CONFORMANCE_REQUIRE") == "1":
            pytest.fail(found)
        pytest.skip(found)
    return found


@pytest.fixture
def claude_bin() -> CliBinary:
    return require_cli("claude")


@pytest.fixture
def codex_bin() -> CliBinary:
    return require_cli("codex")


@pytest.fixture
def opencode_bin() -> CliBinary:
    return require_cli("opencode")


@pytest.fixture
def gemini_bin() -> CliBinary:
    return require_cli("gemini")


# --------------------------------------------------------------------------------------------
# Running a CLI
# --------------------------------------------------------------------------------------------


@dataclass
class CliRun:
    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    events: list[dict[str, Any]]  # stdout lines that parsed as JSON objects
    other_lines: list[str]  # stdout lines that did not
    duration: float
    timed_out: bool
    pid: int  # also the session id and process group id
    marker: str  # CHIA_CONFORMANCE_RUN value in the CLI environment
    leftovers: list[str] = field(default_factory=list)  # processes of the session still alive

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == type_]

    def assert_clean_exit(self) -> None:
        assert_clean_exit(self)

    def describe(self) -> str:
        """Everything needed to debug a failed assertion."""
        return (
            f"argv: {self.argv}\nexit: {self.returncode} timed_out={self.timed_out} "
            f"duration={self.duration:.1f}s leftovers={self.leftovers}\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, sid) of a live, non-zombie process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def session_members(sid: int, marker: str | None = None) -> list[int]:
    """Live processes of a run: its session or process group ``sid``, plus (with ``marker``)
    any process whose environment carries ``CHIA_CONFORMANCE_RUN=<marker>``, which catches
    descendants that escaped with their own ``setsid``."""
    needle = f"{RUN_MARKER_VAR}={marker}".encode() if marker else None
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        stat = _proc_stat(pid)
        if stat is None:
            continue
        if stat[2] == sid or stat[1] == sid or (needle and _has_marker(pid, needle)):
            found.append(pid)
    return found


def children_of_this_process() -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[0] == me:
                out.append(int(entry))
    return out


def recording_wrapper(directory: Path, cli: str, *extra_lines: str) -> Path:
    """An executable that records its argv (``argv.txt``, one per line) and environment
    (``env.txt``) into ``directory``, runs ``extra_lines`` of shell, then execs ``cli``."""
    wrapper = directory / f"{Path(cli).name}-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {directory}/argv.txt\n'
        f"env > {directory}/env.txt\n"
        + "".join(f"{line}\n" for line in extra_lines)
        + f'exec {cli} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


# -- leak checks shared by the backend tests -------------------------------------------------

_CHILDREN_BEFORE: set[int] = set()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def new_children() -> set[int]:
    """Children of this process started during the current test (multiprocessing's
    resource tracker, started by other tests, is not ours to judge)."""
    return set(children_of_this_process()) - _CHILDREN_BEFORE


async def wait_until_clean(seconds: float = 5.0) -> None:
    """Dropped streams are torn down by their own task: give it the time it is allowed."""
    from chia_async.subprocess import live_process_groups

    deadline = time.monotonic() + seconds
    while (new_children() or live_process_groups()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@pytest.fixture
def no_process_leaks() -> Iterator[None]:
    """Fail the test if a child process, a registered process group or a file descriptor
    outlives it (waiting a little for what ends asynchronously)."""
    from chia_async import sync
    from chia_async.subprocess import live_process_groups

    sync.background_loop()  # process-wide and long-lived by design: not a per-call leak
    _CHILDREN_BEFORE.clear()
    _CHILDREN_BEFORE.update(children_of_this_process())
    before_fds = open_fds()
    yield
    deadline = time.monotonic() + 5
    while (new_children() or live_process_groups()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not new_children(), f"child processes left behind: {new_children()}"
    assert not live_process_groups(), "a process group is still registered for teardown"
    # uvicorn/anyio close sockets asynchronously; give them a moment
    deadline = time.monotonic() + 5
    while open_fds() > before_fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() <= before_fds, "file descriptors leaked"


def _kill_session(sid: int, marker: str | None = None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    for pid in session_members(sid, marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def run_cli(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = CLI_TIMEOUT,
    stdin: bytes | None = None,
) -> CliRun:
    """Run a CLI in its own session with a hard timeout; parse stdout as JSON lines.

    On timeout the whole process group (and anything else in the session) is SIGKILLed.
    After the run, any process still in the session is reported in ``leftovers`` and killed.
    """
    marker = uuid.uuid4().hex
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env, RUN_MARKER_VAR: marker},
        cwd=str(cwd),
        start_new_session=True,
    )
    sid = proc.pid
    timed_out = False
    try:
        out_b, err_b = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_session(sid, marker)
        try:
            out_b, err_b = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a grandchild outside the session holds the pipes
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            out_b, err_b = b"", b""
    except BaseException:
        _kill_session(sid, marker)
        proc.kill()
        proc.wait()
        raise
    duration = time.monotonic() - start

    # Give exiting children a moment, then report and kill whatever is still around.
    leftovers: list[int] = []
    deadline = time.monotonic() + 3.0
    while True:
        leftovers = [p for p in session_members(sid, marker) if p != proc.pid]
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    described = [f"{p}: {_cmdline(p)}" for p in leftovers]
    if leftovers:
        _kill_session(sid, marker)

    stdout = out_b.decode("utf-8", "replace")
    events: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        if isinstance(obj, dict):
            events.append(obj)
        else:
            other.append(line)
    return CliRun(
        argv=list(argv),
        returncode=None if timed_out else proc.returncode,
        stdout=stdout,
        stderr=err_b.decode("utf-8", "replace"),
        events=events,
        other_lines=other,
        duration=duration,
        timed_out=timed_out,
        pid=sid,
        marker=marker,
        leftovers=described,
    )


def assert_clean_exit(run: CliRun) -> None:
    """The run finished in time with exit 0 and left no process behind."""
    assert not run.timed_out, f"CLI timed out after {run.duration:.1f}s\n{run.describe()}"
    assert run.returncode == 0, run.describe()
    assert not run.leftovers, f"processes left behind: {run.leftovers}\n{run.describe()}"
    stray = children_of_this_process()
    assert not stray, f"children of the test process still running: {[_cmdline(p) for p in stray]}"


def _dump_dir() -> Path | None:
    """``CHIA_CONFORMANCE_DUMP=<dir>``: write every CLI run and every recorded request there."""
    target = os.environ.get("CHIA_CONFORMANCE_DUMP")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dump(name: str, data: Any) -> None:
    target = _dump_dir()
    if target is not None:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        (target / safe).write_text(json.dumps(data, indent=1, default=repr, ensure_ascii=False))


@pytest.fixture(name="run_cli")
def run_cli_fixture(request: pytest.FixtureRequest) -> Iterator[Callable[..., CliRun]]:
    """``run_cli(argv, env=..., cwd=..., timeout=..., stdin=...)`` -> :class:`CliRun`.

    At teardown, any process started by these runs that is still alive fails the test (and is
    killed), whether or not the test body checked it.
    """
    runs: list[CliRun] = []

    def run(argv: Sequence[str], **kwargs: Any) -> CliRun:
        result = run_cli(argv, **kwargs)
        runs.append(result)
        _dump(
            f"{request.node.name}.run{len(runs)}.json",
            {
                "argv": result.argv,
                "env": kwargs.get("env"),
                "exit": result.returncode,
                "timed_out": result.timed_out,
                "duration": round(result.duration, 3),
                "leftovers": result.leftovers,
                "stdout_events": result.events,
                "stdout_other": result.other_lines,
                "stderr": result.stderr,
            },
        )
        return result

    yield run
    stray = [p for r in runs for p in session_members(r.pid, r.marker)]
    for r in runs:
        _kill_session(r.pid, r.marker)
    assert not stray, f"processes of the CLI sessions still running: {[_cmdline(p) for p in stray]}"


# --------------------------------------------------------------------------------------------
# A real MCP server (python `mcp` 2.x MCPServer over streamable HTTP)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McpCall:
    tool: str
    arguments: dict[str, Any]


class McpTestServer:
    """``mcp.server.MCPServer`` named "mock" with tools ``add`` and ``echo``, served by uvicorn
    on ``http://127.0.0.1:PORT/mcp`` in a background thread. Every tool call is recorded."""

    def __init__(self) -> None:
        self.calls: list[McpCall] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def calls_to(self, tool: str) -> list[McpCall]:
        with self._lock:
            return [c for c in self.calls if c.tool == tool]

    def _record(self, tool: str, arguments: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(McpCall(tool, arguments))

    def _build_app(self) -> Any:
        from mcp.server import MCPServer

        mcp = MCPServer("mock", log_level="WARNING")

        @mcp.tool(description="Add two integers and return the sum.")
        def add(a: int, b: int) -> int:
            self._record("add", {"a": a, "b": b})
            return a + b

        @mcp.tool(description="Return the given text unchanged.")
        def echo(text: str) -> str:
            self._record("echo", {"text": text})
            return text

        return mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")

    def start(self) -> None:
        import uvicorn

        # IPPROTO_TCP: asyncio sets TCP_NODELAY only then (else ~40 ms delayed-ACK stalls)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._build_app(),
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)

        def serve() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start()/stop()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name="mcp-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"MCP test server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("MCP test server did not start within 15 s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "MCP test server thread did not stop"
        if self._error is not None:
            raise RuntimeError("MCP test server crashed") from self._error


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    server = McpTestServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Scripted model server
# --------------------------------------------------------------------------------------------


@pytest.fixture
def model_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh ``chia_async.testing.ScriptedModelServer`` per test (scripts are per-test)."""
    from chia_async.testing.server import ScriptedModelServer

    with ScriptedModelServer() as srv:
        try:
            yield srv
        finally:
            if _dump_dir() is not None:
                start = min((r.received_at for r in srv.requests()), default=0.0)
                _dump(
                    f"{request.node.name}.requests.json",
                    [
                        {
                            "t": round(r.received_at - start, 3),
                            "script": r.script,
                            "method": r.method,
                            "path": r.path,
                            "query": r.query,
                            "turn_index": r.turn_index,
                            "headers": dict(r.headers),
                            "parsed": dataclasses.asdict(r.parsed) if r.parsed else None,
                            "body": r.body,
                        }
                        for r in srv.requests()
                    ],
                )
