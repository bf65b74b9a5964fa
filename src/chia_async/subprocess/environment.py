"""The environment a CLI child process gets: an allowlist, never the whole parent env.

The rule, in the order it is applied:

1. **Allowlist from the parent** (``base``, default ``os.environ``): only what a process
   needs to run, find its config and reach the network —
   ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``LANG``, ``LANGUAGE``, ``LC_*``,
   ``TZ``, ``TMPDIR``/``TMP``/``TEMP``, ``XDG_*``, the proxy variables
   (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``, ``ALL_PROXY``, upper and lower case) and
   the CA bundle variables (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, ``REQUESTS_CA_BUNDLE``,
   ``CURL_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``).
2. **plus the names in** ``allow``, also taken from the parent: each CLI backend lists its
   documented configuration variables (``ANTHROPIC_BASE_URL``, ``CLAUDE_CONFIG_DIR``,
   ``CODEX_HOME``...). A trailing ``*`` allows a prefix (``"OTEL_*"``).
   **Credentials never come from the parent**, even when named in ``allow``: a variable that
   looks like one (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ``*_API_KEY``, ``*_TOKEN``,
   ``*_SECRET*``, AWS keys...) is dropped with a debug log. An inherited
   ``ANTHROPIC_API_KEY`` would silently move a subscription user onto API billing; a key
   reaches the CLI only when the caller hands it over on purpose.
3. **plus** ``explicit`` (the backend's ``env=`` parameter and credentials given as
   ``api_key=``), which wins over everything above, credentials included.
4. ``CLAUDECODE`` is **always** removed, even from ``explicit`` (with a debug log): Claude
   Code sets it for its own children and refuses to start when it is present, so a
   chia_async program run from inside a Claude Code session would fail every call.

``TERM`` is deliberately not passed: the child writes to pipes, and a terminal type only
invites colour codes and pagers into its output.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping

__all__ = ["BASE_ALLOWLIST", "build_child_env", "is_credential_name"]

logger = logging.getLogger("chia_async.subprocess")

#: variables passed from the parent to every CLI (a trailing ``*`` is a prefix)
BASE_ALLOWLIST: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TMP",
    "TEMP",
    "XDG_*",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
)

_NEVER = "CLAUDECODE"

# Names that hold credentials. Matched case-insensitively against the whole name.
_CREDENTIAL_RE = re.compile(
    r"""
    .*_API_KEY | .*_APIKEY | API_KEY
    | .*_AUTH_TOKEN | .*_ACCESS_TOKEN | .*_OAUTH_TOKEN | .*_SESSION_TOKEN | .*_TOKEN
    | .*SECRET.* | .*PASSWORD.*
    | AWS_ACCESS_KEY_ID | AWS_BEARER_TOKEN_BEDROCK
    """,
    re.IGNORECASE | re.VERBOSE,
)


def is_credential_name(name: str) -> bool:
    """Whether the variable ``name`` looks like it holds a credential (never inherited)."""
    return _CREDENTIAL_RE.fullmatch(name) is not None


def _compile(patterns: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"allow entries must be non-empty strings, got {pattern!r}")
        if pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    return frozenset(exact), tuple(prefixes)


_BASE_EXACT, _BASE_PREFIXES = _compile(BASE_ALLOWLIST)


def build_child_env(
    *,
    allow: Iterable[str] = (),
    explicit: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a CLI child: allowlist + ``allow`` from ``base``, then ``explicit``.

    See the module docstring for the rule. ``base`` defaults to ``os.environ``. Raises
    ``TypeError`` for a non-string name or value in ``explicit`` and ``ValueError`` for one
    containing a NUL byte (``execve`` cannot pass it), so a bad ``env=`` fails before a
    process is started rather than as an obscure spawn error.
    """
    parent = os.environ if base is None else base
    if isinstance(allow, str):
        raise TypeError("allow must be an iterable of names, not a single string")
    extra_exact, extra_prefixes = _compile(allow)
    exact = _BASE_EXACT | extra_exact
    prefixes = _BASE_PREFIXES + extra_prefixes

    env: dict[str, str] = {}
    for name, value in parent.items():
        if not (name in exact or (prefixes and name.startswith(prefixes))):
            continue
        if name == _NEVER:
            continue
        if is_credential_name(name):
            # only reachable through `allow` (or a prefix): the base list holds no credentials
            logger.debug(
                "not passing %s from the parent environment: credentials are explicit-only", name
            )
            continue
        env[name] = value

    for name, value in (explicit or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"environment names and values must be str, got {type(name).__name__}="
                f"{type(value).__name__}"
            )
        if "\0" in name or "\0" in value or "=" in name or not name:
            raise ValueError(f"invalid environment variable {name!r}")
        env[name] = value

    if env.pop(_NEVER, None) is not None:
        logger.debug(
            "removed %s from the child environment: claude refuses to start with it", _NEVER
        )
    return env
