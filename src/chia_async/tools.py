"""``ChiaTool``: an MCP server whose tools a call may use.

A tool is described, not run, here: provider backends open an MCP client to it inside their
tool loop, and CLI backends write it into the CLI's own MCP configuration. Three kinds:

* ``ChiaTool.http(url)`` — a server already listening (streamable HTTP);
* ``ChiaTool.stdio(command, *args)`` — a server the runtime starts as a subprocess;
* ``ChiaTool.in_process(server)`` — an ``mcp`` server object living in this process; provider
  backends connect to it in memory (the SDK's own in-process transport).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chia_async.redaction import REDACTED

__all__ = ["ChiaTool"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChiaTool:
    """An MCP server given to a call. Build one with :meth:`http`, :meth:`stdio` or
    :meth:`in_process`.

    ``name`` becomes the server name the model sees (Claude Code: ``mcp__<name>__<tool>``),
    so it must match ``^[A-Za-z0-9_-]{1,64}$``. ``allowed_tools`` limits which of the
    server's tools are offered (all when None). ``tool_timeout`` bounds each tool call.
    Header and environment values never appear in the repr.
    """

    name: str
    transport: Literal["http", "stdio", "in_process"]
    url: str | None = None
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    server: Any = None
    allowed_tools: tuple[str, ...] | None = None
    tool_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"ChiaTool name must match ^[A-Za-z0-9_-]{{1,64}}$, got {self.name!r}")
        if self.transport == "http":
            if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
                raise ValueError(f"ChiaTool.http needs an http(s) URL, got {self.url!r}")
        elif self.transport == "stdio":
            if not self.command or not all(isinstance(c, str) and c for c in self.command):
                raise ValueError("ChiaTool.stdio needs a command (a non-empty list of strings)")
        elif self.transport == "in_process":
            if self.server is None:
                raise ValueError("ChiaTool.in_process needs an mcp server object")
        else:
            raise ValueError(f"unknown ChiaTool transport {self.transport!r}")
        if not isinstance(self.tool_timeout, int | float) or self.tool_timeout <= 0:
            raise ValueError(f"tool_timeout must be a positive number, got {self.tool_timeout!r}")

    @classmethod
    def http(
        cls,
        url: str,
        *,
        name: str = "tools",
        headers: Mapping[str, str] | None = None,
        allowed_tools: Sequence[str] | None = None,
        tool_timeout: float = 120.0,
    ) -> ChiaTool:
        """An MCP server reachable over streamable HTTP at ``url``."""
        return cls(
            name=name,
            transport="http",
            url=url,
            headers=dict(headers or {}),
            allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
            tool_timeout=tool_timeout,
        )

    @classmethod
    def stdio(
        cls,
        command: str | Sequence[str],
        *args: str,
        name: str = "tools",
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        allowed_tools: Sequence[str] | None = None,
        tool_timeout: float = 120.0,
    ) -> ChiaTool:
        """An MCP server started as ``command args...`` speaking MCP over stdin/stdout."""
        argv = (command,) if isinstance(command, str) else tuple(command)
        return cls(
            name=name,
            transport="stdio",
            command=argv + tuple(args),
            env=dict(env or {}),
            cwd=cwd,
            allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
            tool_timeout=tool_timeout,
        )

    @classmethod
    def in_process(
        cls,
        server: Any,
        *,
        name: str | None = None,
        allowed_tools: Sequence[str] | None = None,
        tool_timeout: float = 120.0,
    ) -> ChiaTool:
        """An ``mcp`` server object living in this process."""
        server_name = name or str(getattr(server, "name", "") or "tools")
        server_name = re.sub(r"[^A-Za-z0-9_-]", "_", server_name)[:64]
        return cls(
            name=server_name,
            transport="in_process",
            server=server,
            allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
            tool_timeout=tool_timeout,
        )

    def __repr__(self) -> str:
        target = {
            "http": self.url,
            "stdio": " ".join(self.command),
            "in_process": type(self.server).__name__,
        }[self.transport]
        extras = ""
        if self.headers:
            extras += f", headers={{{', '.join(f'{k!r}: {REDACTED!r}' for k in self.headers)}}}"
        if self.env:
            extras += f", env={{{', '.join(f'{k!r}: {REDACTED!r}' for k in self.env)}}}"
        return f"ChiaTool.{self.transport}({target!r}, name={self.name!r}{extras})"
