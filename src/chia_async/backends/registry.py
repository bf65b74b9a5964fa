"""The table of backends: what each is called, where its class lives, what it needs.

One row per backend, so adding a backend is one line here. The ``chia-async`` command reads
it to build a backend from a name (``chia-async run --backend codex``) and to report which
backends are usable on this machine (``chia-async backends``); programs may use it too::

    from chia_async.backends.registry import BACKENDS, build, load_class
    llm = build(BACKENDS["openai"], model="gpt-5-mini")

Nothing is imported until asked for: :func:`load_class` imports the backend's module, and a
class that this version of chia_async does not have is reported as such
(:class:`BackendUnavailableError`), not as a crash. :func:`inspect` says whether a backend's
SDK or CLI is installed (a CLI's version checked against the supported range) and whether
credentials are present: it reads only the *names* of environment variables and the
existence of login files, never their values.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect as _inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chia_async.extras import MissingExtraError

if TYPE_CHECKING:
    from chia_async.base import LLMCallBase

__all__ = [
    "BACKENDS",
    "BackendEntry",
    "BackendStatus",
    "BackendUnavailableError",
    "UnknownBackendError",
    "build",
    "get",
    "inspect",
    "load_class",
    "version_in_range",
]

Protocol = Literal["anthropic", "openai", "openai_responses", "gemini", "bedrock", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendEntry:
    """One backend.

    ``target`` is ``"module:Class"``. ``options`` are constructor arguments that define the
    entry (``backend="api"``). ``extra``/``sdk``: the pip extra and the modules it brings;
    ``cli``/``cli_versions``: the executable and the supported ``[min, max)`` versions.
    ``key_env``: variables holding an API key that ``chia-async run`` hands to the backend
    when set; ``ambient``: other evidence of credentials (variable names, or ``~/`` files
    such as a CLI's login); ``needs_credentials`` is False for local servers.
    ``key_param``/``base_url_param``/``cli_path_param`` say where an explicit key, endpoint
    and executable go: a constructor argument, or a dotted path into one
    (``"env.ANTHROPIC_BASE_URL"``, ``"client_kwargs.endpoint_url"``). ``protocol`` is the wire
    protocol (for the scripted server's base URLs). ``resume``: the class has
    ``restore_session`` and its results carry the session state.
    """

    name: str
    target: str
    summary: str
    protocol: Protocol
    options: Mapping[str, Any] = field(default_factory=dict)
    extra: str | None = None
    sdk: tuple[str, ...] = ()
    cli: str | None = None
    cli_versions: tuple[str, str] | None = None
    key_env: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()
    needs_credentials: bool = True
    required_env: tuple[str, ...] = ()
    default_model: str | None = None
    key_param: str | None = "api_key"
    base_url_param: str | None = "base_url"
    cli_path_param: str | None = None
    resume: bool = False

    @property
    def module(self) -> str:
        """The backend's module."""
        return self.target.partition(":")[0]

    @property
    def class_name(self) -> str:
        """The backend's class name."""
        return self.target.partition(":")[2]

    @property
    def kind(self) -> Literal["cli", "api"]:
        """``"cli"`` for a coding-agent CLI, ``"api"`` for a provider API."""
        return "cli" if self.cli else "api"


_CLAUDE = "chia_async.backends.claude:ClaudeCodeLLM"
_OPENAI_SDK = ("openai", "mcp")
_AWS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "~/.aws/credentials",
    "~/.aws/config",
)
_GCP = ("GOOGLE_APPLICATION_CREDENTIALS", "~/.config/gcloud/application_default_credentials.json")

_ENTRIES: tuple[BackendEntry, ...] = (
    # -- coding-agent CLIs --------------------------------------------------------------------
    BackendEntry(
        name="claude",
        target=_CLAUDE,
        summary="Claude Code CLI",
        protocol="anthropic",
        cli="claude",
        cli_versions=("2.1.0", "3"),
        ambient=("~/.claude/.credentials.json",),
        key_env=("ANTHROPIC_API_KEY",),
        base_url_param="env.ANTHROPIC_BASE_URL",
        cli_path_param="cli_path",
        resume=True,
    ),
    BackendEntry(
        name="codex",
        target="chia_async.backends.codex:CodexLLM",
        summary="OpenAI Codex CLI",
        protocol="openai_responses",
        cli="codex",
        cli_versions=("0.169.0", "1"),
        key_env=("CODEX_API_KEY", "OPENAI_API_KEY"),
        ambient=("~/.codex/auth.json",),
        key_param="env.CODEX_API_KEY",
        cli_path_param="codex_bin",
        resume=True,
    ),
    BackendEntry(
        name="opencode",
        target="chia_async.backends.opencode:OpenCodeLLM",
        summary="OpenCode CLI",
        protocol="openai",
        cli="opencode",
        cli_versions=("1.18.0", "2"),
        ambient=("~/.local/share/opencode/auth.json",),
        cli_path_param="opencode_bin",
        resume=True,
    ),
    BackendEntry(
        name="gemini-cli",
        target="chia_async.backends.gemini_cli:GeminiCLILLM",
        summary="Gemini CLI",
        protocol="gemini",
        cli="gemini",
        cli_versions=("0.61.0", "1"),
        key_env=("GEMINI_API_KEY",),
        ambient=("~/.gemini/oauth_creds.json",),
        base_url_param="env.GOOGLE_GEMINI_BASE_URL",
        cli_path_param="gemini_bin",
        resume=True,
    ),
    BackendEntry(
        name="antigravity",
        target="chia_async.backends.antigravity:AntigravityLLM",
        summary="Google Antigravity CLI (agy)",
        protocol="none",
        cli="agy",
        ambient=("~/.gemini/oauth_creds.json",),
        key_param=None,
        base_url_param=None,
        cli_path_param="agy_bin",
    ),
    # -- provider APIs ------------------------------------------------------------------------
    BackendEntry(
        name="claude-api",
        target=_CLAUDE,
        options={"backend": "api"},
        summary="Anthropic Messages API",
        protocol="anthropic",
        extra="anthropic",
        sdk=("anthropic", "mcp"),
        key_env=("ANTHROPIC_API_KEY",),
    ),
    BackendEntry(
        name="openai",
        target="chia_async.backends.openai_providers:OpenAILLM",
        summary="OpenAI Chat Completions",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        key_env=("OPENAI_API_KEY",),
        default_model="gpt-5-mini",
    ),
    BackendEntry(
        name="openai-compat",
        target="chia_async.backends.openai_compat:OpenAICompatLLM",
        summary="any OpenAI-compatible endpoint (--base-url)",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        key_env=("OPENAI_API_KEY",),
    ),
    BackendEntry(
        name="fireworks",
        target="chia_async.backends.openai_providers:FireworksLLM",
        summary="Fireworks AI",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        key_env=("FIREWORKS_API_KEY",),
    ),
    BackendEntry(
        name="groq",
        target="chia_async.backends.openai_providers:GroqLLM",
        summary="Groq",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        key_env=("GROQ_API_KEY",),
    ),
    BackendEntry(
        name="openrouter",
        target="chia_async.backends.openai_providers:OpenRouterLLM",
        summary="OpenRouter",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        key_env=("OPENROUTER_API_KEY",),
    ),
    BackendEntry(
        name="ollama",
        target="chia_async.backends.ollama:OllamaLLM",
        summary="Ollama (local server)",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        needs_credentials=False,
    ),
    BackendEntry(
        name="vllm",
        target="chia_async.backends.vllm:VLLMLLM",
        summary="vLLM (local server)",
        protocol="openai",
        extra="openai",
        sdk=_OPENAI_SDK,
        key_env=("VLLM_API_KEY",),
        needs_credentials=False,
    ),
    BackendEntry(
        name="bedrock",
        target="chia_async.backends.bedrock:BedrockLLM",
        summary="AWS Bedrock Converse",
        protocol="bedrock",
        extra="bedrock",
        sdk=("aioboto3", "mcp"),
        ambient=_AWS,
        key_param=None,
        base_url_param="client_kwargs.endpoint_url",
    ),
    BackendEntry(
        name="vertex-gemini",
        target="chia_async.backends.vertex:VertexGeminiLLM",
        summary="Gemini on Vertex AI",
        protocol="gemini",
        extra="vertex",
        sdk=("google.genai", "mcp"),
        ambient=_GCP,
        required_env=("GOOGLE_CLOUD_PROJECT",),
        key_param="client_kwargs.api_key",
        base_url_param="client_kwargs.http_options.base_url",
    ),
    BackendEntry(
        name="vertex-maas",
        target="chia_async.backends.vertex:VertexGenericLLM",
        summary="Vertex AI Model-as-a-Service (OpenAI-compatible)",
        protocol="openai",
        extra="vertex",
        sdk=("google.genai", "openai", "mcp"),
        ambient=_GCP,
        required_env=("GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"),
    ),
)

#: Every backend by its ``chia-async`` name, in display order.
BACKENDS: Mapping[str, BackendEntry] = {entry.name: entry for entry in _ENTRIES}


class UnknownBackendError(LookupError):
    """No backend has that name; the message lists the names there are."""


class BackendUnavailableError(ImportError):
    """The backend is in the table but not in this version of chia_async."""


def get(name: str) -> BackendEntry:
    """The entry called ``name``, or :class:`UnknownBackendError` with suggestions."""
    entry = BACKENDS.get(name)
    if entry is None:
        import difflib

        close = difflib.get_close_matches(name, list(BACKENDS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownBackendError(
            f"unknown backend {name!r}{hint}; backends: {', '.join(BACKENDS)}"
        )
    return entry


def load_class(entry: BackendEntry) -> type[LLMCallBase]:
    """Import the backend's class.

    Raises :class:`BackendUnavailableError` when this version of chia_async does not have
    it, and :class:`~chia_async.extras.MissingExtraError` when its module needs an optional
    package that is not installed.
    """
    try:
        module = importlib.import_module(entry.module)
    except MissingExtraError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("chia_async"):
            raise _unavailable(entry) from None
        raise _missing_sdk(entry, exc.name) from exc
    cls = getattr(module, entry.class_name, None)
    if not isinstance(cls, type):
        raise _unavailable(entry)
    return cls


def _unavailable(entry: BackendEntry) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"backend {entry.name!r} ({entry.class_name}) is not available in this version of "
        "chia-async"
    )


def _missing_sdk(entry: BackendEntry, module: str | None) -> MissingExtraError:
    what = repr(module.split(".")[0]) if module else "an optional package"
    extra = f"chia-async[{entry.extra}]" if entry.extra else "chia-async"
    return MissingExtraError(
        f"backend {entry.name!r} needs {what}, which is not installed; "
        f"install it with: pip install '{extra}'"
    )


def missing_sdk_modules(entry: BackendEntry) -> list[str]:
    """The entry's SDK modules that are not installed (found without importing them)."""
    missing = []
    for module in entry.sdk:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            missing.append(module)
    return missing


def require_sdk(entry: BackendEntry) -> None:
    """Raise :class:`~chia_async.extras.MissingExtraError` unless the entry's SDK is installed."""
    missing = missing_sdk_modules(entry)
    if missing:
        raise _missing_sdk(entry, missing[0])


# -- building -----------------------------------------------------------------------------------


def build(
    entry: BackendEntry,
    *,
    model: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    cli_path: str | None = None,
    **kwargs: Any,
) -> LLMCallBase:
    """Construct the entry's backend.

    ``api_key``, ``base_url`` and ``cli_path`` go where the entry says (a constructor
    argument, an ``env`` variable, a ``client_kwargs`` key); ``model`` falls back to the
    entry's default, then to the class's own. Other ``kwargs`` go to the constructor as
    they are. Raises :class:`ValueError` when a required model is missing or the backend
    cannot take one of the three, besides whatever the constructor raises.
    """
    cls = load_class(entry)
    arguments: dict[str, Any] = {**entry.options, **kwargs}
    model = model or entry.default_model
    if model:
        arguments["model"] = model
    elif _requires(cls, "model"):
        raise ValueError(f"backend {entry.name!r} needs a model: pass --model (model=)")
    for value, path, what in (
        (api_key, entry.key_param, "an API key"),
        (base_url, entry.base_url_param, "a base URL"),
        (cli_path, entry.cli_path_param, "a CLI path"),
    ):
        if value is None:
            continue
        if path is None:
            raise ValueError(f"backend {entry.name!r} does not take {what}")
        _place(arguments, path, value)
    return cls(**arguments)


def _requires(cls: type, parameter: str) -> bool:
    try:
        signature = _inspect.signature(cls)
    except (TypeError, ValueError):
        return False
    param = signature.parameters.get(parameter)
    return param is not None and param.default is _inspect.Parameter.empty


def accepts(cls: type, parameter: str) -> bool:
    """Whether ``cls(...)`` takes a keyword argument ``parameter``."""
    try:
        params = _inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    if parameter in params:
        return True
    # presets pass **kwargs through to a base class that may take it
    if any(p.kind is _inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return any(accepts(base, parameter) for base in cls.__mro__[1:] if base is not object)
    return False


def _place(arguments: dict[str, Any], path: str, value: str) -> None:
    """Set ``arguments[a][b]...[z] = value`` for ``path`` ``"a.b...z"``, copying mappings."""
    head, *rest = path.split(".")
    if not rest:
        arguments[head] = value
        return
    inner = dict(arguments.get(head) or {})
    _place(inner, ".".join(rest), value)
    arguments[head] = inner


# -- what is usable here --------------------------------------------------------------------------

Status = Literal["ready", "not installed", "not configured", "unsupported version", "not available"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendStatus:
    """Whether one backend is usable on this machine, and what to do if not.

    ``credentials`` names what was found (a variable's name or a file's path; never a
    value); ``hint`` is the next step when ``status`` is not ``"ready"``.
    """

    name: str
    summary: str
    kind: Literal["cli", "api"]
    status: Status
    detail: str = ""
    hint: str = ""
    cli_path: str | None = None
    cli_version: str | None = None
    credentials: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """Whether the backend can be used as it is."""
        return self.status == "ready"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "name": self.name,
            "summary": self.summary,
            "kind": self.kind,
            "status": self.status,
            "ready": self.ready,
            "detail": self.detail,
            "hint": self.hint,
            "cli_path": self.cli_path,
            "cli_version": self.cli_version,
            "credentials": list(self.credentials),
        }


def found_credentials(
    entry: BackendEntry, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Names of the entry's credential sources present here: set variables, existing files."""
    env = os.environ if environ is None else environ
    found = []
    for source in (*entry.key_env, *entry.ambient):
        if source.startswith("~/"):
            home = env.get("HOME") or str(Path.home())
            if (Path(home) / source[2:]).is_file():
                found.append(source)
        elif env.get(source):
            found.append(source)
    return tuple(found)


async def inspect(
    entry: BackendEntry,
    *,
    cli_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    probe_timeout: float = 10.0,
) -> BackendStatus:
    """Check one backend: class present, SDK or CLI installed (and its version supported),
    credentials found. A CLI is looked up on ``PATH`` unless ``cli_path`` is given, and
    asked for its version (bounded by ``probe_timeout``)."""

    def outcome(status: Status, **fields: Any) -> BackendStatus:
        return BackendStatus(
            name=entry.name, summary=entry.summary, kind=entry.kind, status=status, **fields
        )

    try:
        cls = load_class(entry)
    except BackendUnavailableError as exc:
        return outcome("not available", detail=str(exc), hint="upgrade chia-async")
    except MissingExtraError as exc:
        return outcome(
            "not installed",
            detail=str(exc),
            hint=f"pip install 'chia-async[{entry.extra}]'",
        )
    missing = missing_sdk_modules(entry)
    if missing:
        return outcome(
            "not installed",
            detail=f"the {', '.join(repr(m) for m in missing)} package is not installed",
            hint=f"pip install 'chia-async[{entry.extra}]'",
        )
    path = version = None
    if entry.cli:
        from chia_async.errors import CLINotFoundError
        from chia_async.subprocess.discovery import find_cli, probe_version

        install = str(getattr(cls, "install_command", "") or f"install the {entry.cli} CLI")
        try:
            path = find_cli(entry.cli, explicit_path=cli_path, install_command=install)
        except CLINotFoundError:
            return outcome(
                "not installed",
                detail=f"the {entry.cli!r} CLI was not found on PATH",
                hint=install,
            )
        version = await probe_version(path, timeout=probe_timeout)
        if entry.cli_versions is not None:
            low, high = entry.cli_versions
            if version is None or not version_in_range(version, low, high):
                shown = version or "unknown (no version from --version)"
                return outcome(
                    "unsupported version",
                    detail=f"{entry.cli} {shown} at {path}; supported: >={low}, <{high}",
                    hint=f"{install} (a version >={low}, <{high})",
                    cli_path=path,
                    cli_version=version,
                )
    credentials = found_credentials(entry, environ)
    env = os.environ if environ is None else environ
    unset = [name for name in entry.required_env if not env.get(name)]
    where = f"{entry.cli} {version or '(version unknown)'} at {path}" if entry.cli else ""
    if entry.needs_credentials and not credentials:
        sources = [s for s in (*entry.key_env, *entry.ambient)]
        return outcome(
            "not configured",
            detail=f"{where + '; ' if where else ''}no credentials found",
            hint=_credential_hint(entry, sources),
            cli_path=path,
            cli_version=version,
        )
    if unset:
        return outcome(
            "not configured",
            detail=f"{', '.join(unset)} not set",
            hint=f"set {' and '.join(unset)}",
            cli_path=path,
            cli_version=version,
            credentials=credentials,
        )
    found = f"credentials: {', '.join(credentials)}" if credentials else "no credentials needed"
    return outcome(
        "ready",
        detail=f"{where}; {found}" if where else found,
        cli_path=path,
        cli_version=version,
        credentials=credentials,
    )


def _credential_hint(entry: BackendEntry, sources: Sequence[str]) -> str:
    variables = [s for s in sources if not s.startswith("~/")]
    files = [s for s in sources if s.startswith("~/")]
    if entry.kind == "cli":
        key = f" or pass --api-key-env {entry.key_env[0]}" if entry.key_env else ""
        return f"log in once with `{entry.cli}`{key}"
    parts = []
    if variables:
        parts.append("set " + " or ".join(variables))
    if files:
        parts.append("create " + " or ".join(files))
    return "; ".join(parts) or "configure credentials"


_NUMBERS = re.compile(r"\d+")


def _version_key(version: str) -> tuple[int, ...]:
    core = re.split(r"[-+]", version.lstrip("v"), maxsplit=1)[0]
    return tuple(int(n) for n in _NUMBERS.findall(core))


def version_in_range(version: str, low: str, high: str) -> bool:
    """Whether ``low <= version < high``, comparing dotted numbers (``2.1.197`` in
    ``[2.1.0, 3)``); a pre-release suffix is ignored."""
    key = _version_key(version)
    if not key:
        return False
    return _version_key(low) <= key < _version_key(high)
