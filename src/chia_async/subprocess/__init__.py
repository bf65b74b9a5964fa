"""Running coding-agent CLIs as supervised subprocesses.

* :mod:`~chia_async.subprocess.framing` — bytes -> JSONL lines -> records, no 64 KiB limit;
* :mod:`~chia_async.subprocess.environment` — the child's environment from an allowlist;
* :mod:`~chia_async.subprocess.process` — the supervisor: process group, concurrent pipe
  drains, total/idle deadlines, TERM -> KILL teardown on every exit path, an exit hook;
* :mod:`~chia_async.subprocess.discovery` — finding the executable, probing its version;
* :mod:`~chia_async.subprocess.backend` — ``CLIBackend``, the base of the CLI backends.

Names are imported lazily, like the top-level package: framing alone does not load anyio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chia_async._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DEFAULT_LINE_LIMIT": "chia_async.subprocess.framing",
    "Diagnostic": "chia_async.subprocess.framing",
    "JsonlFramer": "chia_async.subprocess.framing",
    "Record": "chia_async.subprocess.framing",
    "parse_record": "chia_async.subprocess.framing",
    "parse_records": "chia_async.subprocess.framing",
    "BASE_ALLOWLIST": "chia_async.subprocess.environment",
    "build_child_env": "chia_async.subprocess.environment",
    "ProcessOutcome": "chia_async.subprocess.process",
    "ProcessSpec": "chia_async.subprocess.process",
    "RecordStream": "chia_async.subprocess.process",
    "SupervisedProcess": "chia_async.subprocess.process",
    "live_process_groups": "chia_async.subprocess.process",
    "find_cli": "chia_async.subprocess.discovery",
    "probe_version": "chia_async.subprocess.discovery",
}

__all__ = [
    "BASE_ALLOWLIST",
    "DEFAULT_LINE_LIMIT",
    "Diagnostic",
    "JsonlFramer",
    "ProcessOutcome",
    "ProcessSpec",
    "Record",
    "RecordStream",
    "SupervisedProcess",
    "build_child_env",
    "find_cli",
    "live_process_groups",
    "parse_record",
    "parse_records",
    "probe_version",
]

if TYPE_CHECKING:
    from chia_async.subprocess.discovery import find_cli, probe_version
    from chia_async.subprocess.environment import BASE_ALLOWLIST, build_child_env
    from chia_async.subprocess.framing import (
        DEFAULT_LINE_LIMIT,
        Diagnostic,
        JsonlFramer,
        Record,
        parse_record,
        parse_records,
    )
    from chia_async.subprocess.process import (
        ProcessOutcome,
        ProcessSpec,
        RecordStream,
        SupervisedProcess,
        live_process_groups,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
