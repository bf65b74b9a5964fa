"""The error taxonomy: reference signatures, shared bases, pickling (also across a spawn
worker), JSON round trip, and no secrets in messages or reprs."""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chia_async import errors
from chia_async.redaction import register_secret

REFERENCE = Path(__file__).parent.parent / "fixtures" / "reference" / "chia-models-api.txt"
BACKEND_MODULES = [
    "claude",
    "bedrock",
    "vertex",
    "antigravity",
    "codex",
    "opencode",
    "openai_compat",
    "gemini_cli",  # beyond the reference
]
RESET = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


def reference_exceptions() -> dict[tuple[str, str], tuple[str, str]]:
    """(module, class) -> (parameter list text, base name) for every reference exception."""
    text = REFERENCE.read_text()
    found = {}
    pattern = r"^exception chia\.models\.(\w+)\.(\w+)\((.*?)\)\[source\]\n\nBases: (\w+)"
    for m in re.finditer(pattern, text, re.M):
        found[(m.group(1), m.group(2))] = (m.group(3), m.group(4))
    return found


REFERENCE_EXCEPTIONS = reference_exceptions()


def render_signature(cls: type) -> str:
    """The constructor signature as the reference prints it (sphinx style)."""
    parts = []
    for param in inspect.signature(cls).parameters.values():
        text = f"{param.name}: {param.annotation}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    return ", ".join(parts)


def all_error_classes() -> list[type[errors.ChiaError]]:
    classes: list[type[errors.ChiaError]] = []
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, errors.ChiaError):
            classes.append(obj)
    for module_name in BACKEND_MODULES:
        module = importlib.import_module(f"chia_async.backends.{module_name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, errors.ChiaError)
                and obj.__module__ == module.__name__
            ):
                classes.append(obj)
    return classes


ALL_CLASSES = all_error_classes()

SAMPLE_VALUES: dict[str, Any] = {
    "node_id": "node-7",
    "error_type": "custom_kind",
    "exit_code": 3,
    "raw_message": "something failed",
    "status_code": 429,
    "reset_time": RESET,
    "retry_after": 7,
    "partial_text": "half an ans",
    "block_reason": "SAFETY",
    "stderr": "stderr tail",
    "cli": "claude",
    "install_command": "npm install -g @anthropic-ai/claude-code",
    "message": "a message",
    "timeout": 5.0,
}


def build(cls: type[errors.ChiaError]) -> errors.ChiaError:
    """An instance with every constructor argument set to a non-default value."""
    kwargs = {}
    for name, param in inspect.signature(cls).parameters.items():
        if name == "status_code" and "str" in str(param.annotation):
            kwargs[name] = "ThrottlingException"
        else:
            kwargs[name] = SAMPLE_VALUES[name]
    return cls(**kwargs)


def test_every_reference_exception_exists_with_its_exact_signature() -> None:
    assert len(REFERENCE_EXCEPTIONS) >= 50
    for (module_name, class_name), (params, base) in REFERENCE_EXCEPTIONS.items():
        module = importlib.import_module(f"chia_async.backends.{module_name}")
        cls = getattr(module, class_name, None)
        assert cls is not None, f"chia_async.backends.{module_name}.{class_name} is missing"
        assert render_signature(cls) == params, (module_name, class_name)
        base_cls = getattr(module, base, None)
        if base != "Exception":
            assert base_cls is not None and issubclass(cls, base_cls), (class_name, base)


@pytest.mark.parametrize(
    ("name", "shared"),
    [
        ("RateLimitError", errors.RateLimitError),
        ("AuthenticationError", errors.AuthenticationError),
        ("BillingError", errors.BillingError),
        ("InvalidRequestError", errors.InvalidRequestError),
        ("ServerError", errors.ServerError),
        ("MaxOutputTokensError", errors.MaxOutputTokensError),
        ("ContextLengthExceededError", errors.ContextLengthExceededError),
    ],
)
def test_backend_classes_inherit_the_shared_class(name: str, shared: type) -> None:
    for module_name in BACKEND_MODULES:
        module = importlib.import_module(f"chia_async.backends.{module_name}")
        cls = getattr(module, name, None)
        if cls is None:
            continue
        assert issubclass(cls, shared), f"{module_name}.{name}"
        assert issubclass(cls, errors.BackendError)
        # the shared class decides retryability and kind, not the family base
        assert cls.retryable is shared.retryable
        assert cls.kind == shared.kind


def test_context_length_is_an_invalid_request_in_every_family() -> None:
    for module_name in BACKEND_MODULES:
        module = importlib.import_module(f"chia_async.backends.{module_name}")
        if hasattr(module, "InvalidRequestError"):
            assert issubclass(module.ContextLengthExceededError, module.InvalidRequestError)


def test_unknown_classes_are_unknown_errors() -> None:
    for module_name, unknown in [
        ("claude", "UnknownClaudeError"),
        ("codex", "UnknownCodexError"),
        ("opencode", "UnknownOpenCodeError"),
        ("antigravity", "UnknownAntigravityError"),
        ("bedrock", "UnknownBedrockError"),
        ("vertex", "UnknownVertexError"),
        ("openai_compat", "UnknownOpenAIError"),
        ("gemini_cli", "UnknownGeminiCLIError"),
    ]:
        cls = getattr(importlib.import_module(f"chia_async.backends.{module_name}"), unknown)
        assert issubclass(cls, errors.UnknownError)
        assert not cls.retryable


def test_one_except_clause_catches_every_backend() -> None:
    from chia_async.backends import bedrock, claude, codex

    for exc in (
        claude.RateLimitError("n", RESET),
        codex.RateLimitError("n"),
        bedrock.RateLimitError("n", RESET, status_code="ThrottlingException"),
    ):
        with pytest.raises(errors.RateLimitError):
            raise exc


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_pickle_round_trip_keeps_type_and_fields(cls: type[errors.ChiaError]) -> None:
    original = build(cls)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert copy.fields() == original.fields()
    assert str(copy) == str(original)
    assert copy == original
    # every constructor argument survived as an attribute
    for name in inspect.signature(cls).parameters:
        if name == "message":
            continue
        expected = getattr(original, name)
        assert getattr(copy, name) == expected, (cls, name)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_json_round_trip(cls: type[errors.ChiaError]) -> None:
    original = build(cls)
    data = original.to_dict()
    import json

    copy = errors.ChiaError.from_dict(json.loads(json.dumps(data)))
    assert type(copy) is cls
    assert copy == original


def test_from_dict_refuses_foreign_types() -> None:
    with pytest.raises(ValueError, match="not a chia_async error type"):
        errors.ChiaError.from_dict({"type": "os.system", "fields": {}})
    with pytest.raises(ValueError, match="not a chia_async error type"):
        errors.ChiaError.from_dict({"type": "chia_async.base.LLMCallBase", "fields": {}})


def _spawn_roundtrip(payload: bytes) -> bytes:
    error = pickle.loads(payload)
    assert isinstance(error, errors.ChiaError)
    return pickle.dumps(error)


def _raise_in_worker(payload: bytes) -> None:
    raise pickle.loads(payload)


@pytest.mark.timeout(120)
def test_every_class_crosses_a_spawn_worker_intact() -> None:
    originals = [build(cls) for cls in ALL_CLASSES]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        back = pool.map(_spawn_roundtrip, [pickle.dumps(e) for e in originals])
        # an exception *raised* in the worker travels back through multiprocessing's own
        # pickling and is re-raised here with its type and fields
        for original in originals[:5] + originals[-5:]:
            with pytest.raises(type(original)) as info:
                pool.apply(_raise_in_worker, (pickle.dumps(original),))
            assert info.value.fields() == original.fields()
    for original, data in zip(originals, back, strict=True):
        copy = pickle.loads(data)
        assert type(copy) is type(original)
        assert copy.fields() == original.fields()


def test_shared_fields_read_as_defaults_where_a_signature_lacks_them() -> None:
    from chia_async.backends import bedrock, codex

    assert codex.ServerError("n").retry_after is None
    assert bedrock.ServerError("n").exit_code == -1
    assert codex.RateLimitError("n").reset_time is None
    with pytest.raises(AttributeError):
        _ = codex.ServerError("n").no_such_field  # type: ignore[attr-defined]


def test_secrets_never_appear_in_message_or_repr() -> None:
    register_secret("my-very-secret-token-123")
    from chia_async.backends import claude

    exc = claude.AuthenticationError(
        "n", raw_message="bad key my-very-secret-token-123 and sk-ant-api03-abcdefghijkl"
    )
    for text in (str(exc), repr(exc), str(exc.to_dict()), exc.raw_message):
        assert "my-very-secret-token-123" not in text
        assert "sk-ant-api03" not in text
        assert "[REDACTED]" in text
    unknown = errors.UnknownError("n", stderr="Authorization: Bearer abc.def.ghi")
    assert "abc.def.ghi" not in repr(unknown)


def test_huge_texts_are_clipped() -> None:
    exc = errors.ProcessError("n", exit_code=1, stderr="x" * 5_000_000)
    assert len(exc.stderr) < 10_000
    assert "characters cut" in exc.stderr


def test_messages_say_what_happened() -> None:
    from chia_async.backends import claude

    exc = claude.RateLimitError("claude_code", RESET, "You've hit your limit")
    assert "claude_code" in str(exc)
    assert "2026-11-25T00:00:00+00:00" in str(exc)
    assert "You've hit your limit" in str(exc)
    cli = errors.CLINotFoundError("n", cli="codex", install_command="npm i -g @openai/codex")
    assert "npm i -g @openai/codex" in str(cli)
    timeout = errors.TimeoutError("n", "too slow", timeout=3)
    assert isinstance(timeout, TimeoutError)  # the builtin: `except TimeoutError` works


def test_error_tree_is_drawn_in_the_module_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        if name not in ("ChiaError",):
            assert name in doc, name
