"""Every backend class in chia_async.backends (discovered, not listed) crosses a process
boundary intact: it pickles without live clients, and keeps its Ray resource."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import pytest

import chia_async.backends
from chia_async.base import LLMCallBase
from chia_async.distributed.function import llm_resources
from chia_async.testing import Turn

#: values for constructor parameters a backend may require
ARGUMENTS = {
    "model": "test-provider/test-model",  # some backends want provider/model
    "project": "test-project",
    "location": "us-central1",
    "region": "us-east-1",
    "api_key": "sk-test-pickle-0123456789",
}


def backend_classes() -> list[type[LLMCallBase]]:
    found = []
    for info in pkgutil.iter_modules(chia_async.backends.__path__):
        module = importlib.import_module(f"chia_async.backends.{info.name}")
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, LLMCallBase)
                and value.__module__ == module.__name__
                and not name.startswith("_")
                and not inspect.isabstract(value)
            ):
                found.append(value)
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def build(cls: type[LLMCallBase]) -> LLMCallBase:
    parameters = inspect.signature(cls.__init__).parameters
    return cls(**{name: value for name, value in ARGUMENTS.items() if name in parameters})


def comparable(value: Any) -> Any:
    """The value when it has value equality; otherwise its type (a client holder, a logger)."""
    if type(value).__eq__ is object.__eq__:
        return type(value)
    return value


def same_state(a: object, b: object) -> None:
    assert vars(a).keys() == vars(b).keys()
    for key in vars(a):
        assert comparable(vars(a)[key]) == comparable(vars(b)[key]), key


def test_discovery_finds_the_backends() -> None:
    names = {cls.__name__ for cls in backend_classes()}
    assert {"ClaudeCodeLLM", "OpenAICompatLLM", "OpenAILLM"} <= names
    assert len(names) >= 8


@pytest.mark.parametrize("cls", backend_classes(), ids=lambda cls: cls.__name__)
def test_backend_pickles_with_its_state_and_resource(cls: type[LLMCallBase]) -> None:
    llm = build(cls)
    resource = getattr(cls, "ray_resource", None)
    assert isinstance(resource, str) and resource, f"{cls.__name__} declares no ray_resource"
    copy = pickle.loads(pickle.dumps(llm))
    assert type(copy) is cls and repr(copy) == repr(llm)
    same_state(copy, llm)
    assert llm_resources(copy) == {llm.ray_resource: 1.0}  # type: ignore[attr-defined]

    llm.ray_resource = "team_b_credentials"  # type: ignore[attr-defined]
    assert llm_resources(pickle.loads(pickle.dumps(llm))) == {"team_b_credentials": 1.0}

    ray_cloudpickle = pytest.importorskip("ray.cloudpickle")  # what Ray itself uses
    same_state(ray_cloudpickle.loads(ray_cloudpickle.dumps(llm)), llm)


@pytest.mark.parametrize("cls", backend_classes(), ids=lambda cls: cls.__name__)
def test_backend_methods_carry_chia_remote(cls: type[LLMCallBase]) -> None:
    llm = build(cls)
    for method in (llm.prompt, llm.aprompt, llm.stream):
        assert callable(method.chia_remote) and callable(method.chia_remote_stream)  # type: ignore[attr-defined]
        spec = method.chia_remote.spec  # type: ignore[attr-defined]
        assert spec.resources_for((llm, "hi"), {}) == {cls.ray_resource: 1.0}  # type: ignore[attr-defined]


async def test_an_llm_that_made_calls_pickles_without_its_clients(model_server) -> None:
    from chia_async.backends.openai_compat import OpenAICompatLLM

    model_server.script("t", [Turn(text="hi")], repeat=True)
    llm = OpenAICompatLLM("m", base_url=model_server.base_url("t") + "/v1", api_key="sk-test-0")
    fresh = pickle.dumps(llm)
    assert (await llm.aprompt("hi")).success  # builds and caches an AsyncOpenAI client
    used = pickle.dumps(llm)
    assert b"httpx" not in used and b"AsyncOpenAI" not in used
    assert len(used) == len(fresh)
    copy = pickle.loads(used)
    assert (await copy.aprompt("hi")).result == "hi"  # builds its own client, lazily
