"""build_child_env: allowlist in, credentials only when explicit, CLAUDECODE never."""

from __future__ import annotations

import logging
import os

import pytest

from chia_async.subprocess import SupervisedProcess, build_child_env
from chia_async.subprocess.environment import BASE_ALLOWLIST, is_credential_name

from .conftest import fake_argv, fake_spec

PARENT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "USER": "u",
    "LANG": "en_US.UTF-8",
    "LC_ALL": "C.UTF-8",
    "LC_CTYPE": "C.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/tmp/u",
    "XDG_CONFIG_HOME": "/home/u/.config",
    "HTTPS_PROXY": "http://proxy:3128",
    "no_proxy": "localhost",
    "SSL_CERT_FILE": "/etc/ssl/cert.pem",
    "NODE_EXTRA_CA_CERTS": "/etc/ssl/extra.pem",
    "TERM": "xterm-256color",
    "CLAUDECODE": "1",
    "CLAUDE_CODE_ENTRYPOINT": "cli",
    "ANTHROPIC_API_KEY": "sk-ant-parent-key",
    "ANTHROPIC_AUTH_TOKEN": "parent-token",
    "OPENAI_API_KEY": "sk-parent-openai",
    "GEMINI_API_KEY": "parent-gemini",
    "AWS_SECRET_ACCESS_KEY": "parent-aws",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
    "CLAUDE_CONFIG_DIR": "/home/u/.claude-alt",
    "OTEL_EXPORTER": "none",
    "OTEL_TOKEN": "secret-otel",
    "RANDOM_APP_SETTING": "x",
    "PYTHONPATH": "/somewhere",
}


def test_only_the_allowlist_passes() -> None:
    env = build_child_env(base=PARENT)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/u",
        "USER": "u",
        "LANG": "en_US.UTF-8",
        "LC_ALL": "C.UTF-8",
        "LC_CTYPE": "C.UTF-8",
        "TZ": "UTC",
        "TMPDIR": "/tmp/u",
        "XDG_CONFIG_HOME": "/home/u/.config",
        "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
        "SSL_CERT_FILE": "/etc/ssl/cert.pem",
        "NODE_EXTRA_CA_CERTS": "/etc/ssl/extra.pem",
    }


def test_backend_config_names_pass_with_allow_including_prefixes() -> None:
    env = build_child_env(
        allow=["ANTHROPIC_BASE_URL", "CLAUDE_CONFIG_DIR", "OTEL_*", "NOT_SET"], base=PARENT
    )
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999"
    assert env["CLAUDE_CONFIG_DIR"] == "/home/u/.claude-alt"
    assert env["OTEL_EXPORTER"] == "none"
    assert "NOT_SET" not in env
    assert "OTEL_TOKEN" not in env  # a prefix never lets a credential through


def test_parent_credentials_never_pass_even_when_allowed(caplog: pytest.LogCaptureFixture) -> None:
    keys = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY"]
    with caplog.at_level(logging.DEBUG, logger="chia_async.subprocess"):
        env = build_child_env(allow=[*keys, "AWS_SECRET_ACCESS_KEY"], base=PARENT)
    for key in [*keys, "AWS_SECRET_ACCESS_KEY"]:
        assert key not in env
    assert "ANTHROPIC_API_KEY" in caplog.text
    assert "sk-ant-parent-key" not in caplog.text  # names are logged, values never


def test_explicit_wins_credentials_included() -> None:
    env = build_child_env(
        allow=["ANTHROPIC_BASE_URL"],
        explicit={
            "ANTHROPIC_API_KEY": "sk-ant-explicit",
            "ANTHROPIC_BASE_URL": "http://x",
            "A": "",
        },
        base=PARENT,
    )
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-explicit"
    assert env["ANTHROPIC_BASE_URL"] == "http://x"
    assert env["A"] == ""


def test_claudecode_is_removed_even_when_explicit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="chia_async.subprocess"):
        env = build_child_env(allow=["CLAUDECODE"], explicit={"CLAUDECODE": "1"}, base=PARENT)
    assert "CLAUDECODE" not in env
    assert "CLAUDECODE" in caplog.text


def test_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-os")
    monkeypatch.setenv("LC_MESSAGES", "C")
    env = build_child_env()
    assert env["PATH"] == os.environ["PATH"]
    assert env["LC_MESSAGES"] == "C"
    assert "ANTHROPIC_API_KEY" not in env


@pytest.mark.parametrize(
    ("explicit", "error"),
    [
        ({"A": 1}, TypeError),
        ({1: "a"}, TypeError),
        ({"A": "a\0b"}, ValueError),
        ({"A=B": "a"}, ValueError),
        ({"": "a"}, ValueError),
    ],
)
def test_bad_explicit_values_fail_early(explicit: dict[object, object], error: type) -> None:
    with pytest.raises(error):
        build_child_env(explicit=explicit, base={})  # type: ignore[arg-type]


def test_allow_must_be_names_not_a_string() -> None:
    with pytest.raises(TypeError):
        build_child_env(allow="PATH")


@pytest.mark.parametrize(
    "name",
    ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY",
     "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "CLAUDE_CODE_OAUTH_TOKEN", "DB_PASSWORD",
     "openai_api_key", "API_KEY"],
)  # fmt: skip
def test_credential_names(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize(
    "name",
    ["ANTHROPIC_BASE_URL", "CLAUDE_CODE_MAX_OUTPUT_TOKENS", "CODEX_HOME", "AWS_REGION",
     "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "PATH"],
)  # fmt: skip
def test_config_names_are_not_credentials(name: str) -> None:
    assert not is_credential_name(name)


def test_base_allowlist_holds_no_credential() -> None:
    assert not [name for name in BASE_ALLOWLIST if is_credential_name(name.rstrip("*"))]


@pytest.mark.usefixtures("no_leaks")
async def test_the_child_sees_exactly_the_built_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-inherited")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-inherited")
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    expected = build_child_env(explicit={"OPENAI_API_KEY": "sk-explicit", "CLAUDECODE": "1"})
    spec = fake_spec("env", env={"OPENAI_API_KEY": "sk-explicit", "CLAUDECODE": "1"})
    assert spec.argv == tuple(fake_argv("env"))
    async with SupervisedProcess(spec) as process:
        records = [record async for record in process.records()]
        await process.wait()
    child_env = records[0]["env"]
    # Python's locale coercion (PEP 538) may set LC_CTYPE in the child itself
    child_env.pop("LC_CTYPE", None)
    expected.pop("LC_CTYPE", None)
    assert child_env == expected
    assert child_env["OPENAI_API_KEY"] == "sk-explicit"
    assert child_env["LC_ALL"] == "C.UTF-8"
    assert "ANTHROPIC_API_KEY" not in child_env
    assert "CLAUDECODE" not in child_env
