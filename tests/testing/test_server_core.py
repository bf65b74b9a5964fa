"""The scripted model server's HTTP core: lifecycle, routing, recording, timing and faults.

Clients are the real SDKs (openai, anthropic) or plain httpx2 where the raw bytes matter.
Everything runs on loopback.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from chia_async.testing.script import (
    Fault,
    ParsedRequest,
    Script,
    ScriptFileError,
    ToolCall,
    Turn,
    load_scripts,
)
from chia_async.testing.server import ScriptedModelServer

pytestmark = pytest.mark.timeout(30)

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


def _server_threads(srv: ScriptedModelServer) -> list[threading.Thread]:
    name = f"chia-async-scripted-server:{srv.port}"
    return [t for t in threading.enumerate() if t.name == name]


def _openai(srv: ScriptedModelServer, name: str = "default", **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=srv.base_url(name), api_key="sk-test", **kw)


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# ----------------------------------------------------------------------------------- lifecycle


def test_sync_context_manager_leaves_no_thread_or_socket() -> None:
    before = set(threading.enumerate())
    with ScriptedModelServer() as srv:
        srv.script("default", [Turn(text="sync hello")])
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        assert _server_threads(srv)
        with openai.OpenAI(base_url=srv.url, api_key="sk-test", max_retries=0) as client:
            reply = client.chat.completions.create(model="gpt-4o", messages=USER)
        assert reply.choices[0].message.content == "sync hello"
        port = srv.port
    assert set(threading.enumerate()) == before
    assert _port_is_closed(port)


def test_explicit_start_and_close_are_idempotent() -> None:
    srv = ScriptedModelServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.url
    assert srv.start() is srv
    with pytest.raises(RuntimeError, match="started once"):
        srv.start()
    port = srv.port
    srv.close()
    srv.close()
    assert not _server_threads(srv)
    assert _port_is_closed(port)
    with pytest.raises(RuntimeError):
        srv.start()


def test_close_with_an_idle_keep_alive_connection_is_prompt() -> None:
    srv = ScriptedModelServer().start()
    srv.script("default", [Turn(text="a")])
    client = httpx2.Client(base_url=srv.url)
    try:
        assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 200
        started = time.monotonic()
        srv.close()
        assert time.monotonic() - started < 1.0
        assert not _server_threads(srv)
    finally:
        client.close()


async def test_async_context_manager_does_not_block_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        async with ScriptedModelServer() as srv:
            srv.script("default", [Turn(text="async hello")])
            async with _openai(srv) as client:
                reply = await client.chat.completions.create(model="gpt-4o", messages=USER)
            assert reply.choices[0].message.content == "async hello"
            ticks_inside = ticks
        assert ticks_inside > 0
        assert ticks > ticks_inside  # the loop kept running while the server stopped
    finally:
        task.cancel()
    assert not _server_threads(srv)


def test_addresses(server: ScriptedModelServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert server.base_url() == server.url
    assert server.base_url("abc") == f"{server.url}/s/abc"
    with pytest.raises(ValueError):
        server.base_url("a/b")
    assert "ScriptedModelServer" in repr(server)


# ------------------------------------------------------------------------------ routing


async def test_unknown_path_is_a_json_404(server: ScriptedModelServer) -> None:
    async with httpx2.AsyncClient(base_url=server.url) as client:
        response = await client.post("/s/route-x/v1/nothing/here", json={})
    assert response.status_code == 404
    assert response.json()["error"]["path"] == "/s/route-x/v1/nothing/here"
    (recorded,) = server.requests("route-x")
    assert recorded.path == "/v1/nothing/here"
    assert recorded.parsed is None


async def test_unknown_script_answers_in_the_protocol_shape(server: ScriptedModelServer) -> None:
    async with _openai(server, "never-defined", max_retries=2) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert "no script named 'never-defined'" in str(info.value)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(server.requests("never-defined")) == 1  # not retried


async def test_prefix_selects_the_script_and_default_needs_none() -> None:
    async with ScriptedModelServer() as srv:
        srv.script("default", [Turn(text="from default")])
        srv.script("other", [Turn(text="from other")])
        async with _openai(srv) as a, _openai(srv, "other") as b:
            ra = await a.chat.completions.create(model="m", messages=USER)
            rb = await b.chat.completions.create(model="m", messages=USER)
        assert ra.choices[0].message.content == "from default"
        assert rb.choices[0].message.content == "from other"
        assert [r.script for r in srv.requests()] == ["default", "other"]


async def test_openai_paths_with_and_without_v1(server: ScriptedModelServer) -> None:
    server.script("paths", [Turn(text="one"), Turn(text="two")])
    async with httpx2.AsyncClient(base_url=server.base_url("paths")) as client:
        first = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        second = await client.post("/chat/completions", json={"model": "m", "messages": []})
    assert first.json()["choices"][0]["message"]["content"] == "one"
    assert second.json()["choices"][0]["message"]["content"] == "two"


async def test_unreadable_request_is_a_400(server: ScriptedModelServer) -> None:
    server.script("bad-body", [Turn(text="never")])
    async with httpx2.AsyncClient(base_url=server.base_url("bad-body")) as client:
        response = await client.post("/v1/chat/completions", content=b"[1, 2]")
    assert response.status_code == 400
    assert "could not read" in response.json()["error"]["message"]
    (recorded,) = server.requests("bad-body")
    assert recorded.body == [1, 2]
    assert recorded.turn_index is None


# ----------------------------------------------------------------------------- recording


async def test_requests_are_recorded(server: ScriptedModelServer) -> None:
    server.script("rec", [Turn(text="a"), Turn(text="b")])
    async with _openai(server, "rec", default_headers={"X-Custom": "Yes"}) as client:
        await client.chat.completions.create(
            model="gpt-rec",
            messages=[{"role": "system", "content": "sys"}, *USER],
            max_tokens=7,
        )
        await client.chat.completions.create(model="gpt-rec", messages=USER, stream=True)
    first, second = server.requests("rec")
    assert first.script == "rec"
    assert first.method == "POST"
    assert first.path == "/chat/completions"
    assert first.query == ""
    assert first.headers["x-custom"] == "Yes"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.body["model"] == "gpt-rec"
    assert first.parsed == ParsedRequest(
        protocol="openai_chat",
        model="gpt-rec",
        stream=False,
        system="sys",
        last_user_text="hi",
        message_count=2,
        max_tokens=7,
    )
    assert (first.turn_index, second.turn_index) == (0, 1)
    assert second.parsed is not None and second.parsed.stream
    assert first.received_at <= second.received_at
    assert all(r.script == "rec" for r in server.requests("rec"))


def test_clear_forgets_requests_and_optionally_scripts() -> None:
    with ScriptedModelServer() as srv:
        srv.script("default", [Turn(text="x")], repeat=True)
        httpx2.post(f"{srv.url}/v1/chat/completions", json={"messages": []})
        assert len(srv.requests()) == 1
        srv.clear(scripts=False)
        assert srv.requests() == []
        assert "default" in srv.scripts()
        srv.clear()
        assert srv.scripts() == {}


def test_max_recorded_keeps_the_newest() -> None:
    with ScriptedModelServer(max_recorded=2) as srv:
        srv.script("default", [Turn(text="x")], repeat=True)
        for _ in range(3):
            httpx2.post(f"{srv.url}/v1/chat/completions", json={"messages": []})
        assert [r.turn_index for r in srv.requests()] == [1, 2]


# -------------------------------------------------------------------------------- scripts


async def test_exhausted_script_is_a_500_that_is_not_retried(server: ScriptedModelServer) -> None:
    server.script("short", [Turn(text="only")])
    async with _openai(server, "short", max_retries=2) as client:
        await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 500
    assert "script 'short' is exhausted" in info.value.message
    assert len(server.requests("short")) == 2


async def test_repeat_loops_the_turns(server: ScriptedModelServer) -> None:
    server.script("loop", [Turn(text="a"), Turn(text="b")], repeat=True)
    async with _openai(server, "loop") as client:
        texts = [
            (await client.chat.completions.create(model="m", messages=USER))
            .choices[0]
            .message.content
            for _ in range(5)
        ]
    assert texts == ["a", "b", "a", "b", "a"]


async def test_turn_function_sees_the_request(server: ScriptedModelServer) -> None:
    seen: list[ParsedRequest] = []

    def answer(request: ParsedRequest) -> Turn:
        seen.append(request)
        return Turn(text=f"echo: {request.last_user_text}")

    server.script("fn", answer)
    async with _openai(server, "fn") as client:
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "ping"}]
        )
    assert reply.choices[0].message.content == "echo: ping"
    assert seen[0].last_user_text == "ping"


async def test_failing_turn_function_is_a_500(
    server: ScriptedModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: ParsedRequest) -> Turn:
        raise ValueError("boom")

    server.script("broken", broken)
    async with _openai(server, "broken", max_retries=2) as client:
        with pytest.raises(openai.InternalServerError, match="boom"):
            await client.chat.completions.create(model="m", messages=USER)
    assert len(server.requests("broken")) == 1
    assert any("broken" in r.getMessage() for r in caplog.records)


def test_add_installs_a_ready_made_script(server: ScriptedModelServer) -> None:
    script = server.add(Script("ready", [Turn(text="r")]))
    assert server.scripts()["ready"] is script


# -------------------------------------------------------------------------- timing


async def test_latency_delays_the_response(server: ScriptedModelServer) -> None:
    server.script("slow", [Turn(text="late", latency=0.3)])
    async with _openai(server, "slow") as client:
        started = time.monotonic()
        await client.chat.completions.create(model="m", messages=USER)
    assert time.monotonic() - started >= 0.3


async def test_chunk_delay_drips_the_stream(server: ScriptedModelServer) -> None:
    server.script("drip", [Turn(text="abcd", chunks=4, chunk_delay=0.1)])
    arrivals: list[float] = []
    async with _openai(server, "drip") as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.08 for gap in gaps), gaps


# ---------------------------------------------------------------------- close interrupts


async def test_close_ends_a_stall_and_the_client_sees_an_error() -> None:
    srv = await asyncio.to_thread(ScriptedModelServer().start)
    srv.script("default", [Turn(text="abc", fault=Fault(kind="stall", after_chunks=2))])
    async with _openai(srv, timeout=20) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        first = await stream.__anext__()
        assert first.choices[0].delta.role == "assistant"
        started = time.monotonic()
        await asyncio.to_thread(srv.close)
        assert time.monotonic() - started < 2.0
        with pytest.raises(openai.APIConnectionError):
            async for _ in stream:
                pass
    assert not _server_threads(srv)


async def test_close_ends_latency_and_slow_drips() -> None:
    srv = await asyncio.to_thread(ScriptedModelServer().start)
    # one slow-before-headers answer and one slow drip, whichever request comes first
    srv.script(
        "default",
        lambda r: (
            Turn(text="abcdef", chunks=6, chunk_delay=30)
            if r.stream
            else Turn(text="x", latency=30)
        ),
    )
    async with _openai(srv, timeout=20) as client:
        waiting = asyncio.create_task(client.chat.completions.create(model="m", messages=USER))
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        await stream.__anext__()
        for _ in range(200):  # until the server holds the other request too
            if len(srv.requests()) == 2:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.to_thread(srv.close)
        assert time.monotonic() - started < 2.0
        with pytest.raises(openai.APIStatusError) as info:
            await waiting
        assert info.value.status_code == 503
        with pytest.raises(openai.APIConnectionError):
            async for _ in stream:
                pass
    assert not _server_threads(srv)


# ------------------------------------------------------------------- non-streaming faults


@pytest.mark.parametrize("kind", ["malformed", "truncate"])
async def test_non_streaming_cut_body_is_unparseable(
    server: ScriptedModelServer, kind: str
) -> None:
    name = f"body-{kind}"
    server.script(name, [Turn(text="hello there", fault=Fault(kind=kind))])  # type: ignore[arg-type]
    async with httpx2.AsyncClient(base_url=server.base_url(name)) as client:
        response = await client.post("/v1/chat/completions", json={"messages": []})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


async def test_non_streaming_drop_is_a_connection_error(server: ScriptedModelServer) -> None:
    server.script("body-drop", [Turn(text="hello there", fault=Fault(kind="drop"))])
    async with _openai(server, "body-drop") as client:
        with pytest.raises(openai.APIConnectionError) as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


async def test_non_streaming_stall_times_out(server: ScriptedModelServer) -> None:
    server.script("body-stall", [Turn(text="x", fault=Fault(kind="stall")), Turn(text="after")])
    async with _openai(server, "body-stall", timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=USER)
        # the server is not stuck: the next turn is served
        reply = await client.chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].message.content == "after"


async def test_non_streaming_midstream_becomes_an_http_error(server: ScriptedModelServer) -> None:
    server.script("body-mid", [Turn(text="x", fault=Fault(kind="midstream", error="overloaded"))])
    async with _openai(server, "body-mid") as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 503


async def test_stream_drop_closes_without_the_final_chunk(server: ScriptedModelServer) -> None:
    server.script(
        "raw-drop", [Turn(text="abcdef", chunks=3, fault=Fault(kind="drop", after_chunks=2))]
    )
    received = b""
    request = {"messages": [], "stream": True}
    async with (
        httpx2.AsyncClient(base_url=server.base_url("raw-drop")) as client,
        client.stream("POST", "/v1/chat/completions", json=request) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError):
            async for piece in response.aiter_bytes():
                received += piece
    assert received.count(b"data: ") == 2
    assert b"[DONE]" not in received


# ------------------------------------------------------------------------- concurrency


async def test_named_scripts_serve_concurrent_clients(server: ScriptedModelServer) -> None:
    names = [f"conc-{i}" for i in range(4)]
    for name in names:
        server.script(name, [Turn(text=f"{name} turn {k}", chunks=3) for k in range(3)])

    async def run_openai(name: str) -> list[str]:
        out = []
        async with _openai(server, name) as client:
            for _ in range(3):
                stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
                out.append(text)
        return out

    async def run_anthropic(name: str) -> list[str]:
        out = []
        async with anthropic.AsyncAnthropic(
            base_url=server.base_url(name), api_key="x", max_retries=0
        ) as client:
            for _ in range(3):
                message = await client.messages.create(model="c", max_tokens=9, messages=USER)
                out.append(message.content[0].text)  # type: ignore[union-attr]
        return out

    results = await asyncio.gather(
        run_openai(names[0]), run_anthropic(names[1]), run_openai(names[2]), run_anthropic(names[3])
    )
    for name, texts in zip(names, results, strict=True):
        assert texts == [f"{name} turn {k}" for k in range(3)]
        assert [r.turn_index for r in server.requests(name)] == [0, 1, 2]


def test_sync_clients_from_threads(server: ScriptedModelServer) -> None:
    server.script("threads", [Turn(text="t")], repeat=True)
    results: list[str | None] = []

    def work() -> None:
        with openai.OpenAI(base_url=server.base_url("threads"), api_key="k", max_retries=0) as c:
            for _ in range(5):
                results.append(
                    c.chat.completions.create(model="m", messages=USER).choices[0].message.content
                )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == ["t"] * 20


# --------------------------------------------------------------------------- script files


def test_load_scripts_from_a_mapping() -> None:
    (script,) = load_scripts(
        {
            "scripts": {
                "demo": {
                    "repeat": True,
                    "turns": [
                        {
                            "text": "hi",
                            "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}],
                        },
                        {"fault": {"kind": "http_error", "status": 429, "retry_after": 1}},
                        {"text": ["a", "b"], "stop": "max_tokens", "latency": 0},
                    ],
                }
            }
        }
    )
    assert script.name == "demo"
    assert script.repeat
    request = ParsedRequest(protocol="openai_chat", model="m", stream=False)
    _, first = script.next_turn(request)
    _, second = script.next_turn(request)
    _, third = script.next_turn(request)
    assert first == Turn(text="hi", tool_calls=(ToolCall(name="add", arguments={"a": 2, "b": 3}),))
    assert second == Turn(fault=Fault.http(429, retry_after=1.0))
    assert third == Turn(text=["a", "b"], stop="max_tokens", latency=0.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scripts": {"x": {"turns": [{"txt": "a"}]}}}, "scripts.x.turns[0]: unknown key 'txt'"),
        ({"scripts": {"x": {"turns": [], "loop": True}}}, "unknown key 'loop'"),
        ({"script": {}}, "unknown key 'script'"),
        ({"scripts": {"x": [{"fault": {"kind": "explode"}}]}}, "'explode' is not one of"),
        ({"scripts": {"x": [{"fault": {"kind": "drop", "oops": 1}}]}}, "fault: unknown key 'oops'"),
        ({"scripts": {"x": [{"chunks": "3"}]}}, "turns[0].chunks: expected int"),
        ({"scripts": {"x": [{"tool_calls": [{"arguments": {}}]}]}}, "missing 'name'"),
        ({"scripts": {"x": [{"stop": "halt"}]}}, "'halt' is not one of"),
        ({"scripts": {}}, "non-empty mapping"),
        ({"scripts": {"x": "turns"}}, "expected a list of turns"),
    ],
)
def test_load_scripts_rejects_bad_input(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ScriptFileError) as info:
        load_scripts(data)
    assert message in str(info.value)


def test_load_scripts_from_files(tmp_path: Path) -> None:
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"scripts": {"a": [{"text": "x"}], "b": {"turns": []}}}))
    assert [s.name for s in load_scripts(good)] == ["a", "b"]
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ScriptFileError, match="invalid JSON"):
        load_scripts(bad)
    with pytest.raises(ScriptFileError, match="cannot read"):
        load_scripts(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- serve command


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "chia_async.testing", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_command_answers_and_exits_on_sigterm(tmp_path: Path) -> None:
    script_file = tmp_path / "scripts.json"
    script_file.write_text(
        json.dumps(
            {
                "scripts": {
                    "default": {"turns": [{"text": "served from a file"}]},
                    "errs": [{"fault": {"kind": "http_error", "status": 429, "retry_after": 1}}],
                }
            }
        )
    )
    proc = _serve("--port", "0", "--script", str(script_file))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("serving on http://127.0.0.1:"), line
        url = line.removeprefix("serving on ")
        with openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0) as client:
            reply = client.chat.completions.create(model="m", messages=USER)
            assert reply.choices[0].message.content == "served from a file"
        with openai.OpenAI(base_url=f"{url}/s/errs", api_key="k", max_retries=0) as client:
            with pytest.raises(openai.RateLimitError) as info:
                client.chat.completions.create(model="m", messages=USER)
            assert info.value.response.headers["retry-after"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_command_rejects_a_bad_script_file(tmp_path: Path) -> None:
    script_file = tmp_path / "bad.json"
    script_file.write_text(json.dumps({"scripts": {"x": [{"text": "a", "colour": "red"}]}}))
    proc = _serve("--port", "0", "--script", str(script_file))
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "unknown key 'colour'" in stderr
    assert stdout == ""


async def test_gzip_request_body_is_decoded(server: ScriptedModelServer) -> None:
    server.script("gz", [Turn(text="unzipped")])
    body = gzip.compress(json.dumps({"model": "m", "messages": USER}).encode())
    async with httpx2.AsyncClient(base_url=server.base_url("gz")) as client:
        response = await client.post(
            "/v1/chat/completions", content=body, headers={"content-encoding": "gzip"}
        )
    assert response.json()["choices"][0]["message"]["content"] == "unzipped"
    (recorded,) = server.requests("gz")
    assert recorded.parsed is not None and recorded.parsed.last_user_text == "hi"


async def test_unrenderable_turn_is_a_500(server: ScriptedModelServer) -> None:
    server.script("bogus", [Turn(text="x", stop="bogus")])  # type: ignore[arg-type]
    async with _openai(server, "bogus", max_retries=2) as client:
        with pytest.raises(openai.InternalServerError, match="could not render"):
            await client.chat.completions.create(model="m", messages=USER)
    assert len(server.requests("bogus")) == 1


def test_load_scripts_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scripts:\n  default:\n    turns:\n      - text: from yaml\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ScriptFileError, match="PyYAML"):
            load_scripts(path)
    else:
        (script,) = load_scripts(path)
        request = ParsedRequest(protocol="openai_chat", model="m", stream=False)
        assert script.next_turn(request)[1] == Turn(text="from yaml")
