"""The scripted model server in a child process, for benchmarks.

In the benchmark's own process the server's request handling would compete with the client
under test for the GIL and charge its CPU to whichever side is measured. Run in a child (as a
real model server is another machine), only the client's work is timed.

    with ChildServer() as server:
        server.script("text", [Turn(text="hi")], repeat=True)   # turns or a module-level function
        url = server.base_url("text")
        server.request_count("text")
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from types import TracebackType
from typing import Any

__all__ = ["ChildServer"]


def _serve(conn: multiprocessing.connection.Connection) -> None:
    from chia_async.testing import ScriptedModelServer

    with ScriptedModelServer() as server:
        conn.send(server.url)
        while True:
            command, args = conn.recv()
            if command == "stop":
                conn.send(None)
                return
            if command == "script":
                name, turns, repeat = args
                server.script(name, turns, repeat=repeat)
                conn.send(None)
            elif command == "count":
                conn.send(len(server.requests(args)))


class ChildServer:
    """A :class:`~chia_async.testing.ScriptedModelServer` running in a spawned child."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()
        self.url: str = self._conn.recv()

    def _ask(self, command: str, args: Any = None) -> Any:
        self._conn.send((command, args))
        return self._conn.recv()

    def script(self, name: str, turns: Any, *, repeat: bool = False) -> None:
        self._ask("script", (name, turns, repeat))

    def base_url(self, name: str) -> str:
        return f"{self.url}/s/{name}"

    def request_count(self, name: str) -> int:
        return int(self._ask("count", name))

    def close(self) -> None:
        if self._process.is_alive():
            self._ask("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
