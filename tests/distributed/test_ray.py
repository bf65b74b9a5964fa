"""chia_remote on a real two-node Ray cluster (tests/distributed/conftest.py): provider calls
against the scripted server, the real claude CLI, typed errors, streaming, cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chia_async import errors
from chia_async.backends import claude, openai_compat
from chia_async.distributed import (
    ChiaFunction,
    ResourceUnavailableError,
    chia_remote,
    chia_remote_stream,
)
from chia_async.distributed.local_cluster import marked_processes
from chia_async.events import Completed, SessionStarted, TextDelta
from chia_async.testing import Fault, Turn
from tests.distributed import helpers

pytestmark = pytest.mark.ray

API_KEY = "sk-ant-test-key-0123456789"
RUN_VAR = "CHIA_TEST_RUN"


def openai_llm(server: Any, script: str, **kwargs: Any) -> openai_compat.OpenAICompatLLM:
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("api_key", "sk-test-0000")
    return openai_compat.OpenAICompatLLM(
        "gpt-test", base_url=server.base_url(script) + "/v1", **kwargs
    )


def claude_llm(claude_bin: Any, server: Any, script: str, marker: str, **kwargs: Any):
    """A ClaudeCodeLLM whose HOME and working directory are the node's own."""
    env = {
        "ANTHROPIC_BASE_URL": server.base_url(script),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        RUN_VAR: marker,  # every CLI process of this test carries it
    }
    kwargs.setdefault("retries", 0)
    return claude.ClaudeCodeLLM(
        model="claude-opus-4-8", cli_path=claude_bin.path, api_key=API_KEY, env=env, **kwargs
    )


async def until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.05)


# -- placement ------------------------------------------------------------------------------


async def test_provider_calls_land_only_on_the_node_with_the_resource(
    ray_nodes, model_server
) -> None:
    model_server.script("t", [Turn(text="hello there friend", chunks=3)], repeat=True)
    llm = openai_llm(model_server, "t", api_key=None, token_provider=helpers.NodeToken())
    local = await llm.aprompt("hi")

    results = await asyncio.gather(*(llm.prompt.chia_remote(llm, "hi") for _ in range(2)))

    tokens = [r.headers["authorization"] for r in model_server.requests("t")]
    assert tokens[0] == "Bearer sk-node-driver-0123456789"  # the local call
    assert tokens[1:] == ["Bearer sk-node-b-0123456789"] * 2  # only b advertises openai
    for result in results:
        assert type(result) is type(local)
        assert (result.result, result.success, result.returncode) == ("hello there friend", True, 0)
        assert (result.usage, result.stop_reason) == (local.usage, local.stop_reason)


async def test_every_spelling_dispatches_the_same_call(ray_nodes, model_server) -> None:
    model_server.script("t", [Turn(text="same answer")], repeat=True)
    llm = openai_llm(model_server, "t")
    results = [
        await llm.prompt.chia_remote(llm, "hi"),
        await llm.aprompt.chia_remote(llm, "hi"),
        await llm.stream.chia_remote(llm, "hi"),
        await chia_remote(llm.prompt, "hi"),  # the typed spelling: the bound method
        llm.prompt.chia_remote(llm, "hi").get(timeout=60),  # for sync callers
    ]
    assert [r.result for r in results] == ["same answer"] * 5


async def test_plain_functions_sync_async_and_streaming(ray_nodes) -> None:
    assert helpers.where("local")[1] == "driver"  # the decorator leaves local calls alone
    tag, node, pid = await helpers.where.chia_remote("x")
    assert (tag, node) == ("x", "b") and pid != os.getpid()
    assert await helpers.where_async.chia_remote("y") in {("y", "a"), ("y", "b")}
    pinned = helpers.where_async.chia_remote.options(resources=ray_nodes.pin("a"))
    assert await pinned("z") == ("z", "a")
    unbounded = helpers.where_async.chia_remote.options(timeout_seconds=None)
    assert (await unbounded("w"))[0] == "w"
    items = [item async for item in helpers.count.chia_remote_stream(3, 0.0)]
    assert items == [(0, "b"), (1, "b"), (2, "b")]
    assert await helpers.count.chia_remote(3, 0.0) == (2, "b")  # drained: the last item


# -- errors ---------------------------------------------------------------------------------


async def test_typed_error_arrives_as_the_same_class_with_the_same_fields(
    ray_nodes, model_server
) -> None:
    # a reset beyond the retry cap: aprompt raises instead of returning a failed result
    model_server.script("rl", [Turn(fault=Fault.http(429, retry_after=3600))], repeat=True)
    llm = openai_llm(model_server, "rl")
    with pytest.raises(openai_compat.RateLimitError) as local:
        await llm.aprompt("hi")
    with pytest.raises(openai_compat.RateLimitError) as remote:
        await llm.aprompt.chia_remote(llm, "hi")

    error = remote.value
    assert type(error) is openai_compat.RateLimitError
    assert isinstance(error, errors.RateLimitError)
    fields, expected = error.fields(), local.value.fields()
    reset, local_reset = fields.pop("reset_time"), expected.pop("reset_time")
    assert fields == expected and fields["status_code"] == 429
    assert abs((reset - local_reset).total_seconds()) < 30
    assert 3000 < (reset - datetime.now(UTC)).total_seconds() <= 3600
    assert any("ip=127.0.0.3" in note for note in error.__notes__)  # raised on node b

    with pytest.raises(ValueError) as plain:
        await helpers.fail.chia_remote("boom")
    assert str(plain.value) == "boom"  # any picklable exception crosses, not only ours


async def test_retryable_failure_returns_a_failed_result_with_its_error(
    ray_nodes, model_server
) -> None:
    model_server.script("e", [Turn(fault=Fault.http(500))], repeat=True)
    llm = openai_llm(model_server, "e")
    result = await llm.prompt.chia_remote(llm, "hi")
    assert (result.success, result.result, result.returncode) == (False, "", -1)
    assert type(result.error) is openai_compat.ServerError


async def test_absent_resource_fails_fast_with_a_clear_error(ray_nodes, model_server) -> None:
    llm = openai_llm(model_server, "t")
    llm.ray_resource = "bedrock_eu"  # an instance override of the class's resource
    started = time.monotonic()
    with pytest.raises(ResourceUnavailableError) as info:
        llm.prompt.chia_remote(llm, "hi")
    assert time.monotonic() - started < 5
    assert info.value.missing == ["bedrock_eu"]
    assert "'bedrock_eu'" in str(info.value) and "claude_code, openai" in str(info.value)

    @ChiaFunction(resources={"openai": 100})  # more than any one node has
    def greedy() -> None:
        return None

    with pytest.raises(ResourceUnavailableError, match="'openai' is at most 4 on any live node"):
        greedy.chia_remote()
    assert not model_server.requests("t")


async def test_wait_has_a_deadline_and_cancels_the_call(ray_nodes, model_server) -> None:
    model_server.script("slow", [Turn(text="late", latency=30)])
    llm = openai_llm(model_server, "slow")
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError, match="within 3 s"):
        await llm.aprompt.chia_remote.options(timeout_seconds=3)(llm, "hi")
    assert time.monotonic() - started < 15


# -- streaming ------------------------------------------------------------------------------


async def test_events_stream_back_in_order_as_they_happen(ray_nodes, model_server) -> None:
    words = ["one ", "two ", "three ", "four ", "five"]
    model_server.script("drip", [Turn(text=words, chunk_delay=0.4)], repeat=True)
    llm = openai_llm(model_server, "drip")
    local = [type(e).__name__ for e in [e async for e in llm.stream("hi")]]

    arrivals: list[tuple[float, Any]] = []
    async with llm.prompt.chia_remote_stream(llm, "hi") as stream:
        async for event in stream:
            arrivals.append((time.monotonic(), event))
    events = [e for _, e in arrivals]

    assert [type(e).__name__ for e in events] == local
    assert [e.text for e in events if isinstance(e, TextDelta)] == words
    assert isinstance(events[-1], Completed) and events[-1].result.result == "".join(words)
    first_text = next(t for t, e in arrivals if isinstance(e, TextDelta))
    assert arrivals[-1][0] - first_text > 1.0  # delivered as produced, not at the end


async def test_leaving_a_stream_early_cancels_the_remote_call(ray_nodes, model_server) -> None:
    model_server.script("long", [Turn(text=["x"] * 20, chunk_delay=1.0)])
    llm = openai_llm(model_server, "long")
    started = time.monotonic()
    async with llm.stream.chia_remote_stream(llm, "hi") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    assert time.monotonic() - started < 10  # not the 20 s the whole answer takes
    ready, _ = ray_ready(stream.object_ref_generator.completed())
    assert ready  # the remote call has ended


def ray_ready(ref: Any) -> tuple[list[Any], list[Any]]:
    import ray

    return ray.wait([ref], timeout=0)


async def test_an_error_midstream_follows_the_events_before_it(ray_nodes, model_server) -> None:
    turn = Turn(text=["a", "b", "c", "d"], fault=Fault(kind="midstream", after_chunks=2))
    model_server.script("mid", [turn], repeat=True)
    llm = openai_llm(model_server, "mid")

    async def collect(stream: Any) -> tuple[list[str], BaseException]:
        seen = []
        with pytest.raises(errors.ChiaError) as info:
            async for event in stream:
                seen.append(type(event).__name__)
        return seen, info.value

    local_events, local_error = await collect(llm.stream("hi"))
    remote_events, remote_error = await collect(chia_remote_stream(llm.stream, "hi"))
    assert remote_events == local_events and "TextDelta" in remote_events
    assert type(remote_error) is type(local_error)
    assert remote_error.fields() == local_error.fields()


# -- Claude Code across nodes ---------------------------------------------------------------------


@pytest.mark.conformance
async def test_claude_conversation_resumes_on_the_other_node(
    ray_nodes, model_server, claude_bin
) -> None:
    model_server.script("chat", [Turn(text="first answer"), Turn(text="second answer")])
    llm = claude_llm(claude_bin, model_server, "chat", uuid.uuid4().hex, resume_session=True)
    on_a = llm.prompt.chia_remote.options(resources=ray_nodes.pin("a"))
    on_b = llm.prompt.chia_remote.options(resources=ray_nodes.pin("b"))

    first = await on_a(llm, "remember the word avocado")
    assert first.success and first.result == "first answer"
    session_id = first.session.session_id
    slug_a = claude.project_slug(os.path.realpath(ray_nodes.work("a")))
    assert first.session_transcript_path == str(
        ray_nodes.home("a") / ".claude" / "projects" / slug_a / f"{session_id}.jsonl"
    )
    # what the worker left in its copy of llm came back in the result
    assert (llm.session_id, llm.session_transcript) == (session_id, first.session_transcript)
    assert not (ray_nodes.home("b") / ".claude" / "projects").exists()

    second = await on_b(llm, "which word?")
    assert second.success and second.result == "second answer"
    assert second.session.session_id == session_id
    slug_b = claude.project_slug(os.path.realpath(ray_nodes.work("b")))
    restored = ray_nodes.home("b") / ".claude" / "projects" / slug_b / f"{session_id}.jsonl"
    assert restored.exists()
    history = json.dumps([r.body for r in model_server.requests("chat") if r.parsed][-1])
    assert "avocado" in history and "first answer" in history


@pytest.mark.conformance
async def test_cancelling_the_caller_leaves_no_cli_process_on_either_node(
    ray_nodes, model_server, claude_bin
) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)], repeat=True)
    marker = uuid.uuid4().hex
    llm = claude_llm(claude_bin, model_server, "slow", marker)

    async def call_on_a() -> Any:
        return await llm.aprompt.chia_remote.options(resources=ray_nodes.pin("a"))(llm, "hi")

    async def stream_on_b() -> list[Any]:
        entry = llm.stream.chia_remote_stream.options(resources=ray_nodes.pin("b"))
        return [event async for event in entry(llm, "hi")]

    tasks = [asyncio.create_task(call_on_a()), asyncio.create_task(stream_on_b())]
    await until(lambda: len(model_server.requests("slow")) >= 2, 60, "both CLIs to call the model")
    assert marked_processes(RUN_VAR, marker)  # the CLIs are running, mid-turn
    started = time.monotonic()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    assert time.monotonic() - started < 30
    # the caller's cancellation completed after the workers' teardown: nothing is left
    await until(lambda: not marked_processes(RUN_VAR, marker), 5, "the CLI processes to go")


@pytest.mark.conformance
async def test_session_events_of_a_cli_call_stream_back(
    ray_nodes, model_server, claude_bin
) -> None:
    model_server.script("text", [Turn(text="pong from the scripted server", chunks=4)])
    llm = claude_llm(claude_bin, model_server, "text", uuid.uuid4().hex)
    events = [e async for e in llm.prompt.chia_remote_stream(llm, "say ping")]
    started = next(e for e in events if isinstance(e, SessionStarted))
    assert started.cwd in {str(ray_nodes.work("a")), str(ray_nodes.work("b"))}
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "pong from the scripted server"
    )
    assert isinstance(events[-1], Completed) and events[-1].result.success
