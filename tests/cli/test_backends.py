"""``chia-async backends`` and the backend table behind it (chia_async.backends.registry)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chia_async.backends import registry
from chia_async.cli import main
from tests.cli_support import CLI_PREFIX_BIN

SECRET = "sk-backends-test-0a1b2c3d4e5f6a7b8c9d"
AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch HOME and a PATH with an outdated ``codex`` and the pinned CLIs."""
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    old_codex = bin_dir / "codex"
    old_codex.write_text("#!/bin/sh\necho 'codex-cli 0.1.0'\n")
    old_codex.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}:{CLI_PREFIX_BIN}:/usr/local/bin:/usr/bin:/bin")
    for name in os.environ:
        if name.endswith("_API_KEY") or name in AWS_VARS or name.startswith("GOOGLE_"):
            monkeypatch.delenv(name)
    return home


def statuses(capsys: pytest.CaptureFixture[str], *names: str) -> dict[str, dict[str, Any]]:
    assert main(["backends", "--json", *names]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    return {row["name"]: row for row in map(json.loads, out.splitlines())}


def test_every_backend_is_listed_with_what_to_do(
    machine: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    rows = statuses(capsys)
    assert list(rows) == list(registry.BACKENDS)
    for row in rows.values():
        assert row["status"] in (
            "ready",
            "not installed",
            "not configured",
            "unsupported version",
            "not available",
        )
        assert row["ready"] == (row["status"] == "ready")
        assert row["ready"] or row["hint"], row

    assert rows["openai"]["status"] == "ready"
    assert rows["openai"]["credentials"] == ["OPENAI_API_KEY"]  # the name, never the value
    assert rows["claude-api"]["status"] == "not configured"
    assert rows["claude-api"]["hint"] == "set ANTHROPIC_API_KEY"
    assert rows["ollama"]["status"] == "ready"  # a local server needs no key
    assert rows["ollama"]["detail"] == "no credentials needed"

    codex = rows["codex"]
    assert codex["status"] == "unsupported version"
    assert codex["cli_version"] == "0.1.0"
    assert codex["hint"] == "npm install -g @openai/codex (a version >=0.169.0, <1)"

    if registry.missing_sdk_modules(registry.BACKENDS["bedrock"]):
        assert rows["bedrock"]["hint"] == "pip install 'chia-async[bedrock]'"
    else:
        assert rows["bedrock"]["status"] == "not configured"  # no AWS variable, no ~/.aws
        assert "~/.aws/credentials" in rows["bedrock"]["hint"]


def test_a_cli_with_a_login_is_ready(
    claude_bin: Any, machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = statuses(capsys, "claude")["claude"]
    assert row["status"] == "not configured"
    assert row["cli_version"] == "2.1.197"
    assert row["hint"] == "log in once with `claude` or pass --api-key-env ANTHROPIC_API_KEY"

    login = machine / ".claude" / ".credentials.json"
    login.parent.mkdir()
    login.write_text("{}")
    row = statuses(capsys, "claude")["claude"]
    assert row["status"] == "ready"
    assert row["cli_path"] == claude_bin.path
    assert row["credentials"] == ["~/.claude/.credentials.json"]


def test_missing_packages_and_backends_say_so(
    machine: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = "chia_async.backends.openai_compat:OpenAICompatLLM"
    table = {
        "no-sdk": registry.BackendEntry(
            name="no-sdk",
            target=target,
            summary="x",
            protocol="openai",
            extra="nosdk",
            sdk=("chia_no_such_sdk.client",),
        ),
        "future": registry.BackendEntry(
            name="future",
            target="chia_async.backends.openai_compat:FutureLLM",
            summary="x",
            protocol="openai",
        ),
        "no-module": registry.BackendEntry(
            name="no-module",
            target="chia_async.backends.not_yet:LaterLLM",
            summary="x",
            protocol="openai",
        ),
    }
    for name, entry in table.items():
        monkeypatch.setitem(registry.BACKENDS, name, entry)  # type: ignore[index]
    rows = statuses(capsys, *table)
    assert rows["no-sdk"]["status"] == "not installed"
    assert rows["no-sdk"]["hint"] == "pip install 'chia-async[nosdk]'"
    for name in ("future", "no-module"):
        assert rows[name]["status"] == "not available"
        assert "is not available in this version of chia-async" in rows[name]["detail"]


def test_unknown_backend_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "claud"]) == 2
    assert "unknown backend 'claud' (did you mean claude" in capsys.readouterr().err


def test_table_for_people_with_and_without_rich(
    machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backends", "openai", "codex"]) == 0  # rich's table
    program = (
        "import sys; sys.modules['rich'] = None\n"  # as if rich were not installed
        "from chia_async.cli import main; sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "backends", "openai", "codex"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in (capsys.readouterr().out, done.stdout):
        assert "openai" in text and "not configured" in text and "set OPENAI_API_KEY" in text
        assert "unsupported version" in text and "codex 0.1.0" in text
    assert "openai  not configured" in done.stdout  # plain columns


# -- the table ----------------------------------------------------------------------------------


def test_every_available_class_takes_what_its_row_says() -> None:
    for entry in registry.BACKENDS.values():
        try:
            cls = registry.load_class(entry)
        except registry.BackendUnavailableError:
            continue  # another helper's backend that has not landed yet
        for path in (entry.key_param, entry.base_url_param, entry.cli_path_param):
            if path is not None:
                assert registry.accepts(cls, path.split(".")[0]), (entry.name, path)
        for option in entry.options:
            assert registry.accepts(cls, option), (entry.name, option)
        if entry.resume:
            assert callable(getattr(cls, "restore_session", None)), entry.name
            assert registry.accepts(cls, "resume_session"), entry.name
        if entry.options.get("backend") != "api":  # ClaudeCodeLLM(backend="api") is an API
            assert entry.kind == ("cli" if hasattr(cls, "cli_name") else "api"), entry.name
        if entry.cli:
            assert entry.cli == cls.cli_name, entry.name  # type: ignore[attr-defined]
        assert inspect.isclass(cls)


def test_build_puts_key_endpoint_and_cli_where_each_backend_takes_them() -> None:
    claude = registry.build(
        registry.BACKENDS["claude"], api_key="k-1", base_url="http://127.0.0.1:1", cli_path="/c"
    )
    assert claude.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"  # type: ignore[attr-defined]
    assert claude.api_key == "k-1" and claude.cli_path == "/c"  # type: ignore[attr-defined]
    assert claude.model == "claude-sonnet-4-6"  # the class default

    api = registry.build(registry.BACKENDS["claude-api"], base_url="http://127.0.0.1:2")
    assert api.backend == "api" and api.base_url == "http://127.0.0.1:2"  # type: ignore[attr-defined]

    codex = registry.build(registry.BACKENDS["codex"], api_key="k-2", base_url="http://h/v1")
    assert codex.env["CODEX_API_KEY"] == "k-2"  # type: ignore[attr-defined]

    openai = registry.build(registry.BACKENDS["openai"], api_key="k-3")
    assert openai.model == "gpt-5-mini" and openai.api_key == "k-3"  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="needs a model"):
        registry.build(registry.BACKENDS["openai-compat"])
    with pytest.raises(ValueError, match="does not take an API key"):
        registry.build(registry.BACKENDS["bedrock"], model="m", api_key="k")

    bedrock = registry.build(registry.BACKENDS["bedrock"], model="m", base_url="http://h:3")
    assert bedrock.client_kwargs == {"endpoint_url": "http://h:3"}  # type: ignore[attr-defined]
    vertex = registry.build(
        registry.BACKENDS["vertex-gemini"], model="m", api_key="k-4", base_url="http://h:4"
    )
    assert vertex.client_kwargs == {  # type: ignore[attr-defined]
        "api_key": "k-4",
        "http_options": {"base_url": "http://h:4"},
    }


@pytest.mark.parametrize(
    ("version", "low", "high", "inside"),
    [
        ("2.1.197", "2.1.0", "3", True),
        ("2.0.9", "2.1.0", "3", False),
        ("3.0.0", "2.1.0", "3", False),
        ("0.169.0", "0.169.0", "1", True),
        ("v1.18.33-beta.1", "1.18.0", "2", True),
        ("", "1", "2", False),
    ],
)
def test_version_range(version: str, low: str, high: str, inside: bool) -> None:
    assert registry.version_in_range(version, low, high) is inside
