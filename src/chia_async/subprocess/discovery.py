"""Finding a CLI executable and asking it for its version."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence

from chia_async.errors import ChiaError, CLINotFoundError
from chia_async.subprocess.environment import build_child_env
from chia_async.subprocess.framing import Diagnostic
from chia_async.subprocess.process import ProcessSpec, SupervisedProcess

__all__ = ["find_cli", "probe_version"]

# 1.2, 1.2.3, v1.2.3, 1.2.3-beta.1, 0.46.0+abc: the first such token of the output
_VERSION_RE = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)*(?:[-+][0-9A-Za-z][0-9A-Za-z.\-+]*)?)")


def find_cli(
    name: str,
    *,
    explicit_path: str | os.PathLike[str] | None = None,
    install_command: str,
    node_id: str = "",
    search_path: str | None = None,
) -> str:
    """The absolute path of the CLI to run.

    ``explicit_path`` (the backend's ``cli_path=``) wins: a path (``~`` expanded, relative
    to the working directory) must be an executable file; a bare name is looked up on
    ``PATH`` like ``name``. Otherwise ``name`` is looked up on ``search_path`` (default: this
    process's ``PATH``). Raises :class:`~chia_async.errors.CLINotFoundError`, whose message
    names ``install_command``, when nothing executable is found.
    """
    wanted = os.fspath(explicit_path) if explicit_path is not None else name
    if not wanted:
        raise ValueError("the CLI name must not be empty")
    expanded = os.path.expanduser(wanted)
    if os.sep in expanded or (os.altsep and os.altsep in expanded):
        if os.path.isfile(expanded) and os.access(expanded, os.X_OK):
            return os.path.abspath(expanded)
        raise CLINotFoundError(node_id, cli=wanted, install_command=install_command)
    found = shutil.which(expanded, path=search_path)
    if found is None:
        raise CLINotFoundError(node_id, cli=wanted, install_command=install_command)
    return os.path.abspath(found)


async def probe_version(
    path: str,
    *,
    args: Sequence[str] = ("--version",),
    timeout: float = 5.0,  # noqa: ASYNC109 - a probe owns its deadline, like subprocess.run
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Run ``path --version`` and return the first version-looking token of its output.

    stdout is searched first, then stderr. Returns ``None`` when the output has no version,
    or the program cannot be started, or it does not finish within ``timeout`` seconds —
    in which case its whole process group has been torn down (it runs supervised, like
    any CLI call). ``env`` defaults to the allowlisted environment (no credentials).
    """
    spec = ProcessSpec(
        argv=[path, *args],
        env=build_child_env() if env is None else env,
        total_timeout=timeout,
        terminate_grace=min(1.0, timeout),
        linger_grace=min(1.0, timeout),
        line_limit=1024 * 1024,
        stderr_tail=16 * 1024,
    )
    lines: list[str] = []
    try:
        async with SupervisedProcess(spec, node_id=f"probe:{os.path.basename(path)}") as process:
            async for record in process.records():
                if isinstance(record, Diagnostic):
                    lines.append(record.text)
                else:
                    lines.append(" ".join(str(v) for v in record.values()))
            outcome = await process.wait()
    except ChiaError:
        return None
    for text in ("\n".join(lines), outcome.stderr_tail):
        match = _VERSION_RE.search(text)
        if match:
            return match.group(1)
    return None
