"""ChiaFunction and the dispatch errors, without a cluster: the decorator leaves local calls
alone, checks its arguments, and importing it loads no Ray."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import textwrap

import pytest

from chia_async.base import LLMCallBase
from chia_async.distributed import (
    ChiaFunction,
    RemoteCancelledError,
    ResourceUnavailableError,
    WorkerLostError,
    chia_remote,
)
from chia_async.distributed.function import DISPATCH_MARGIN, LLM_SPEC
from chia_async.testing import ScriptedLLM


def test_importing_the_decorator_and_backends_loads_no_ray() -> None:
    code = textwrap.dedent(
        """
        import sys
        import chia_async.base, chia_async.distributed
        from chia_async.distributed import ChiaFunction
        from chia_async.backends.openai_compat import OpenAICompatLLM
        assert callable(OpenAICompatLLM.prompt.chia_remote)

        @ChiaFunction(resources={"gpu": 1})
        def f(x): return x

        print(f(2), "ray" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["2", "False"]


async def test_decorated_functions_behave_as_before() -> None:
    @ChiaFunction(resources={"gpu": 1})
    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    @ChiaFunction()
    async def double(x: int) -> int:
        return 2 * x

    assert add(1) == 2 and add.__doc__ == "Add." and add.__name__ == "add"
    assert await double(4) == 8 and inspect.iscoroutinefunction(double)
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    assert add.chia_function.resources == {"gpu": 1.0}  # type: ignore[attr-defined]
    # the LLM methods stay what they were: aprompt a coroutine function, prompt sync
    assert inspect.iscoroutinefunction(LLMCallBase.aprompt)
    assert not inspect.iscoroutinefunction(LLMCallBase.prompt)
    assert (await ScriptedLLM(["ok"]).aprompt("hi")).result == "ok"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"resources": ["gpu"]}, TypeError, "mapping"),
        ({"resources": {"gpu": 0}}, ValueError, "amount > 0"),
        ({"resources": {"gpu": "1"}}, TypeError, "numeric"),
        ({"resources": {"CPU": 1}}, ValueError, "num_cpus="),
        ({"resources": {"": 1}}, TypeError, "non-empty"),
        ({"num_cpus": -1}, ValueError, "num_cpus"),
        ({"timeout_seconds": 0}, ValueError, "timeout_seconds"),
        ({"max_retries": 3}, ValueError, "never re-runs"),
        ({"retry_exceptions": True}, ValueError, "never re-runs"),
        ({"num_returns": 2}, ValueError, "never re-runs"),
    ],
)
def test_bad_arguments_are_refused_at_decoration(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        ChiaFunction(**kwargs)


def test_options_merge_and_validate() -> None:
    @ChiaFunction(resources={"gpu": 1}, memory=1000)
    def f() -> None:
        return None

    entry = f.chia_remote.options(resources={"node:127.0.0.2": 0.001}, timeout_seconds=5)  # type: ignore[attr-defined]
    assert entry.spec.resources == {"gpu": 1.0, "node:127.0.0.2": 0.001}
    assert entry.spec.timeout_seconds == 5.0 and entry.spec.ray_options == {"memory": 1000}
    assert f.chia_remote.spec.resources == {"gpu": 1.0}  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="never re-runs"):
        f.chia_remote.options(max_retries=1)  # type: ignore[attr-defined]


def test_llm_calls_ask_for_the_backends_resource_and_deadline() -> None:
    llm = ScriptedLLM(["x"], timeout_seconds=42)
    assert LLM_SPEC.resources_for((llm, "hi"), {}) == {}  # names no resource: runs anywhere
    llm.ray_resource = "openai"  # type: ignore[attr-defined]
    assert LLM_SPEC.resources_for((llm, "hi"), {}) == {"openai": 1.0}
    assert LLM_SPEC.timeout_for((llm, "hi"), {}) == 42 + DISPATCH_MARGIN
    entry = llm.prompt.chia_remote.options(resources={"node:127.0.0.3": 0.001})  # type: ignore[attr-defined]
    assert entry.spec.resources_for((llm, "hi"), {}) == {"openai": 1.0, "node:127.0.0.3": 0.001}
    llm.ray_resource = 7  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="ray_resource"):
        LLM_SPEC.resources_for((llm, "hi"), {})


def test_bad_calls_fail_in_the_caller_before_anything_is_sent() -> None:
    llm = ScriptedLLM(["x"])
    with pytest.raises(TypeError, match="missing a required argument"):
        llm.prompt.chia_remote("hi")  # type: ignore[attr-defined]  # the instance is missing
    with pytest.raises(ValueError, match="must not be empty"):
        llm.prompt.chia_remote(llm, "  ")  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="list of ChiaTool"):
        llm.prompt.chia_remote(llm, "hi", "not tools")  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="not a ChiaFunction"):
        chia_remote(len, "abc")


def test_dispatch_errors_pickle_with_all_fields() -> None:
    error = ResourceUnavailableError.for_request(
        {"openai": 1.0}, 0.0, [{"CPU": 1.0, "claude_code": 4.0, "node:127.0.0.2": 1.0}]
    )
    assert error.missing == ["openai"] and error.advertised == ["claude_code"]
    assert "no live node advertises 'openai'" in str(error)
    apart = ResourceUnavailableError.for_request(
        {"a": 1.0, "b": 1.0}, 0.0, [{"a": 1.0}, {"b": 1.0}]
    )
    assert "no single node has all of them" in str(apart)
    empty = ResourceUnavailableError.for_request({"a": 1.0}, 0.0, [])
    assert "no live node" in str(empty)
    for original in (error, WorkerLostError("n", "node died"), RemoteCancelledError("n", "x")):
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and copy == original
        assert copy.fields() == original.fields() and not copy.retryable


def test_a_worker_reuses_an_llm_object_only_in_the_same_state(model_server) -> None:
    pytest.importorskip("ray.cloudpickle")
    from chia_async.backends.openai_compat import OpenAICompatLLM
    from chia_async.distributed import worker

    llm = OpenAICompatLLM("m", base_url=model_server.base_url() + "/v1", api_key="sk-test-0")
    sent = pickle.dumps(llm)

    def identity(obj: object) -> int:
        return id(obj)

    def rename(obj: OpenAICompatLLM) -> int:
        obj.system_message = "changed by the call"
        return id(obj)

    first = worker.execute(identity, (pickle.loads(sent),), {})
    assert worker.execute(identity, (pickle.loads(sent),), {}) == first  # same state: reused
    other = OpenAICompatLLM("other-model", base_url=llm.base_url, api_key="sk-test-0")
    assert worker.execute(identity, (other,), {}) != first  # another configuration
    assert worker.execute(rename, (pickle.loads(sent),), {}) == first
    # the kept object now holds what the call left in it: only that state matches it
    assert worker.execute(identity, (pickle.loads(sent),), {}) != first
    llm.system_message = "changed by the call"
    assert worker.execute(identity, (pickle.loads(pickle.dumps(llm)),), {}) == first
