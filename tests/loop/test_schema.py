"""Tool-schema compilers: realistic MCP schemas compiled for every provider and checked
against the providers' real SDK types (google-genai, openai, anthropic, botocore's
bedrock-runtime model) and against JSON Schema itself."""

from __future__ import annotations

import copy
import datetime
import enum
import hashlib
import json
import logging
import pickle
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import botocore.session
import jsonschema
import pydantic
import pytest
from anthropic.types import ToolParam
from botocore.validate import validate_parameters
from google.genai import types as genai_types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionToolParam
from pydantic import BaseModel, ConfigDict, Field

from chia_async.loop import schema as schema_module
from chia_async.loop.schema import (
    PROVIDERS,
    CompiledTools,
    ToolNameMap,
    ToolSchemaError,
    ToolSpec,
    compile_for_anthropic,
    compile_for_bedrock,
    compile_for_gemini,
    compile_for_openai,
    compile_tools,
    inline_refs,
    strip_strict_nulls,
)

# --------------------------------------------------------------------------------------------
# Realistic tool schemas: what FastMCP (pydantic) and TypeScript (zod) servers send.


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Priority(int, enum.Enum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    """A postal address."""

    street: str
    city: str = Field(description="City name")
    zip: str | None = None


class Node(BaseModel):
    """A tree node."""

    name: str
    children: list[Node] = []


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class CreateIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: str = Field(description="owner/name", pattern=r"^[\w-]+/[\w.-]+$")
    title: str = Field(min_length=1, max_length=256)
    mode: Literal["fast", "slow"] = "fast"
    kind: Literal["issue"] = "issue"
    color: Color
    priority: Priority = Priority.LOW
    address: Address | None = Field(None, description="Where to ship")
    labels: list[str] = []
    limit: int | None = Field(None, gt=0, le=100)
    due: datetime.datetime | None = None
    request_id: uuid.UUID | None = None
    pet: Cat | Dog | None = Field(None, discriminator="pet_type")


class Search(BaseModel):
    query: str
    filters: dict[str, str] = {}
    extra: Any = None


def pydantic_spec(model: type[BaseModel], name: str = "tool", server: str = "srv") -> ToolSpec:
    return ToolSpec(server, name, f"{name} tool", model.model_json_schema())


ZOD_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "File path"},
        "edits": {
            "type": "array",
            "items": {"$ref": "#/definitions/edit"},
        },
        "dryRun": {"type": "boolean", "default": False},
        "position": {"type": "array", "items": [{"type": "number"}, {"type": "number"}]},
    },
    "required": ["path", "edits"],
    "additionalProperties": False,
    "definitions": {
        "edit": {
            "type": "object",
            "properties": {"oldText": {"type": "string"}, "newText": {"type": "string"}},
            "required": ["oldText", "newText"],
            "additionalProperties": False,
        }
    },
}

#: The shape Notion and calendar MCP servers publish: a top-level union of objects.
ROOT_UNION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"content": {"type": "string"}, "name": {"type": "string"}},
            "required": ["content", "name"],
        },
        {
            "type": "object",
            "properties": {"source_url": {"type": "string"}, "name": {"type": "string"}},
            "required": ["source_url", "name"],
        },
    ]
}

#: "give paths or scopes": a union that only says which properties must be present.
REQUIRED_ALTERNATIVES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "project": {"type": "string"},
        "paths": {"type": "array", "items": {"type": "string"}},
        "scopes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["project"],
    "anyOf": [{"required": ["paths"]}, {"required": ["scopes"]}],
}

REALISTIC: dict[str, ToolSpec] = {
    "pydantic_create_issue": pydantic_spec(CreateIssue, "create_issue"),
    "pydantic_recursive": pydantic_spec(Node, "make_tree"),
    "pydantic_search": pydantic_spec(Search, "search"),
    "zod_edit": ToolSpec("fs", "edit_file", "Edit a file", ZOD_SCHEMA),
    "root_union": ToolSpec("notion", "create-attachment", "Attach", ROOT_UNION_SCHEMA),
    "required_alternatives": ToolSpec("code", "coverage", "", REQUIRED_ALTERNATIVES_SCHEMA),
    "no_arguments": ToolSpec("srv", "ping", "Ping", {"type": "object", "properties": {}}),
    "empty_schema": ToolSpec("srv", "now", "Time", {}),
}

# --------------------------------------------------------------------------------------------
# Validators: the SDKs' own types, plus the rules their APIs enforce beyond them.

_OPENAI_TOOL = pydantic.TypeAdapter(ChatCompletionToolParam)
_ANTHROPIC_TOOL = pydantic.TypeAdapter(ToolParam)
_CONVERSE = (
    botocore.session.get_session()
    .get_service_model("bedrock-runtime")
    .operation_model("ConverseStream")
    .input_shape
)
_ROOT_FORBIDDEN = {"anyOf", "oneOf", "allOf", "enum", "const", "not"}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_json_schema_root(schema: Mapping[str, Any]) -> None:
    assert schema["type"] == "object"
    assert not (_ROOT_FORBIDDEN & set(schema)), schema
    assert "$defs" not in schema and "definitions" not in schema
    assert "$ref" not in json.dumps(schema)
    jsonschema.Draft202012Validator.check_schema(schema)


def check_openai(declaration: dict[str, Any]) -> None:
    # The TypedDict drops unknown keys: an equal round trip means the shape is exactly right.
    assert _OPENAI_TOOL.validate_python(declaration) == declaration
    function = declaration["function"]
    assert _NAME.match(function["name"])
    assert len(function.get("description", "")) <= 1024
    check_json_schema_root(function["parameters"])
    if function.get("strict"):
        check_strict(function["parameters"])


_STRICT_KEYS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
    "enum",
    "const",
    "title",
    "description",
    "pattern",
    "format",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "minItems",
    "maxItems",
}


def check_strict(node: Any) -> None:
    assert isinstance(node, dict) and node, node
    assert set(node) <= _STRICT_KEYS, set(node) - _STRICT_KEYS
    if "anyOf" in node:
        for variant in node["anyOf"]:
            check_strict(variant)
        return
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    if "object" in kinds:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])
        for sub in node["properties"].values():
            check_strict(sub)
    if "array" in kinds:
        check_strict(node["items"])


def check_anthropic(declaration: dict[str, Any]) -> None:
    assert _ANTHROPIC_TOOL.validate_python(declaration) == declaration
    assert set(declaration) <= {"name", "description", "input_schema"}
    assert _NAME.match(declaration["name"])
    check_json_schema_root(declaration["input_schema"])


def check_bedrock(declarations: list[dict[str, Any]]) -> None:
    params = {
        "modelId": "anthropic.claude",
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "toolConfig": {"tools": declarations},
    }
    validate_parameters(params, _CONVERSE)  # raises ParamValidationError
    for declaration in declarations:
        spec = declaration["toolSpec"]
        assert set(spec) <= {"name", "description", "inputSchema"}
        assert _NAME.match(spec["name"])
        check_json_schema_root(spec["inputSchema"]["json"])


_GEMINI_KEYS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
}
_GEMINI_FORMATS = {
    "STRING": {"date-time", "enum"},
    "INTEGER": {"int32", "int64"},
    "NUMBER": {"float", "double"},
}


def check_gemini(declaration: dict[str, Any]) -> None:
    # extra="forbid" on every google.genai model: any keyword Gemini lacks fails here.
    genai_types.FunctionDeclaration.model_validate(declaration)
    genai_types.Tool.model_validate({"functionDeclarations": [declaration]})
    assert re.match(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$", declaration["name"])
    assert set(declaration) <= {"name", "description", "parameters"}
    if "parameters" in declaration:
        assert declaration["parameters"]["type"] == "OBJECT"
        check_gemini_schema(declaration["parameters"], "#")


def check_gemini_schema(node: dict[str, Any], path: str) -> None:
    """The rules the Gemini API and Vertex enforce beyond the SDK's field names."""
    assert set(node) <= _GEMINI_KEYS, (path, set(node) - _GEMINI_KEYS)
    if "anyOf" in node:
        assert "type" not in node, path
        assert node["anyOf"], path
        for i, variant in enumerate(node["anyOf"]):
            check_gemini_schema(variant, f"{path}/anyOf/{i}")
        return
    kind = node["type"]  # Vertex: "schema didn't specify the schema type field"
    assert kind in {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}, (path, kind)
    if kind == "OBJECT":
        assert node["properties"], f"{path}: should be non-empty for OBJECT type"
        assert set(node.get("required", [])) <= set(node["properties"]), path
        for name, sub in node["properties"].items():
            check_gemini_schema(sub, f"{path}/properties/{name}")
    else:
        assert "properties" not in node and "required" not in node, path
    if kind == "ARRAY":
        check_gemini_schema(node["items"], f"{path}/items")
    if "enum" in node:
        assert kind == "STRING" and all(isinstance(v, str) for v in node["enum"]), path
    if "format" in node:
        assert node["format"] in _GEMINI_FORMATS.get(kind, set()), (path, node["format"])


def check(provider: str, compiled: CompiledTools) -> None:
    declarations = list(compiled.declarations)
    if provider == "bedrock":
        if declarations:
            check_bedrock(declarations)
        return
    checker = {"openai": check_openai, "anthropic": check_anthropic, "gemini": check_gemini}
    for declaration in declarations:
        checker[provider](declaration)


def gemini_to_json_schema(node: Any) -> Any:
    """A Gemini schema read back as JSON Schema, to test what it accepts."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            out["type"] = value.lower()
        elif key == "properties":
            out["properties"] = {k: gemini_to_json_schema(v) for k, v in value.items()}
        elif key in ("items",):
            out[key] = gemini_to_json_schema(value)
        elif key == "anyOf":
            out["anyOf"] = [gemini_to_json_schema(v) for v in value]
        elif key not in ("nullable", "format"):
            out[key] = value
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def accepts(schema: Any, instance: Any) -> bool:
    validator = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    return bool(validator(schema).is_valid(instance))


def walk_gemini(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for sub in node.get("properties", {}).values():
        yield from walk_gemini(sub)
    if "items" in node:
        yield from walk_gemini(node["items"])
    for sub in node.get("anyOf", ()):
        yield from walk_gemini(sub)


@contextmanager
def captured_warnings() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    target = logging.getLogger("chia_async.loop")
    target.addHandler(handler)
    try:
        yield records
    finally:
        target.removeHandler(handler)


def parameters(provider: str, declaration: dict[str, Any]) -> dict[str, Any]:
    if provider == "openai":
        return declaration["function"]["parameters"]  # type: ignore[no-any-return]
    if provider == "anthropic":
        return declaration["input_schema"]  # type: ignore[no-any-return]
    if provider == "bedrock":
        return declaration["toolSpec"]["inputSchema"]["json"]  # type: ignore[no-any-return]
    return declaration.get("parameters", {})  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Every realistic schema, every provider, validated by the SDKs


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", sorted(REALISTIC))
def test_realistic_schemas_compile_to_valid_declarations(provider: str, case: str) -> None:
    spec = REALISTIC[case]
    before = copy.deepcopy(dict(spec.input_schema))
    compiled = compile_tools([spec], provider)
    assert compiled.provider == provider
    check(provider, compiled)
    assert dict(spec.input_schema) == before  # never mutated
    if provider != "gemini":
        assert len(compiled) == 1 and not compiled.dropped


@pytest.mark.parametrize("case", sorted(REALISTIC))
def test_strict_mode_is_strict_or_falls_back(case: str) -> None:
    spec = REALISTIC[case]
    with captured_warnings() as records:
        compiled = compile_tools([spec], "openai", strict=True)
    check("openai", compiled)
    (declaration,) = compiled.declarations
    if declaration["function"].get("strict"):
        assert not records
    else:
        assert any(spec.label in r.getMessage() and "strict" in r.getMessage() for r in records)


def test_all_tools_of_a_request_at_once() -> None:
    specs = list(REALISTIC.values())
    for provider in PROVIDERS:
        compiled = compile_tools(specs, provider)
        check(provider, compiled)
        assert len(compiled) + len(compiled.dropped) == len(specs)
        names = [compiled.names.provider_name(*s.key) for s in specs if s not in compiled.dropped]
        assert len(set(names)) == len(names)


# --------------------------------------------------------------------------------------------
# $ref inlining


def test_inline_refs_resolves_defs_and_definitions_and_drops_them() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"$ref": "#/definitions/B"}},
        "$defs": {"A": {"type": "object", "properties": {"b": {"$ref": "#/definitions/B"}}}},
        "definitions": {"B": {"type": "integer"}},
    }
    before = copy.deepcopy(schema)
    assert inline_refs(schema) == {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
            "b": {"type": "integer"},
        },
    }
    assert schema == before


def test_inline_refs_keeps_sibling_keywords() -> None:
    schema = {
        "properties": {
            "annotated": {"$ref": "#/$defs/S", "description": "mine", "default": "x"},
            "constrained": {"$ref": "#/$defs/S", "maxLength": 3},
        },
        "$defs": {"S": {"type": "string", "description": "theirs"}},
    }
    result = inline_refs(schema)["properties"]
    assert result["annotated"] == {"type": "string", "description": "mine", "default": "x"}
    assert result["constrained"] == {
        "allOf": [{"type": "string", "description": "theirs"}, {"maxLength": 3}]
    }


def test_inline_refs_cuts_recursion_at_the_configured_depth() -> None:
    schema = Node.model_json_schema()  # root is a $ref into $defs, children refer back

    def depth(node: dict[str, Any]) -> int:
        children = node.get("properties", {}).get("children")
        return 1 + depth(children["items"]) if children else 0

    assert depth(inline_refs(schema, recursion_limit=0)) == 1
    assert depth(inline_refs(schema, recursion_limit=2)) == 3
    assert depth(inline_refs(schema, recursion_limit=5)) == 6
    cut = inline_refs(schema, recursion_limit=0)["properties"]["children"]["items"]
    assert cut == {"type": "object", "title": "Node", "description": "A tree node."}


def test_inline_refs_mutual_and_root_recursion_terminate() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}, "self": {"$ref": "#"}},
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}},
        },
    }
    result = inline_refs(schema, recursion_limit=1)
    assert "$ref" not in json.dumps(result)
    assert result["properties"]["self"]["properties"]["self"]["properties"]["self"] == {
        "type": "object"
    }


def test_inline_refs_pointer_escapes_anchors_and_property_names_that_look_like_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "$defs": {"type": "string"},  # a property *named* $defs
            "items": {"$ref": "#/$defs/a~1b"},
            "pct": {"$ref": "#/$defs/100%25"},
            "anchored": {"$ref": "#point"},
        },
        "$defs": {
            "a/b": {"type": "boolean"},
            "100%": {"type": "number"},
            "P": {"$anchor": "point", "type": "array", "items": {"type": "integer"}},
        },
    }
    props = inline_refs(schema)["properties"]
    assert props["$defs"] == {"type": "string"}
    assert props["items"] == {"type": "boolean"}
    assert props["pct"] == {"type": "number"}
    assert props["anchored"]["items"] == {"type": "integer"}


def test_inline_refs_remote_refs_become_permissive_and_dangling_ones_fail() -> None:
    remote = {"properties": {"x": {"$ref": "https://example.com/s.json", "description": "d"}}}
    assert inline_refs(remote)["properties"]["x"] == {"description": "d"}
    with pytest.raises(ToolSchemaError, match=r"\$ref '#/\$defs/Nope' points at nothing") as info:
        inline_refs({"properties": {"x": {"$ref": "#/$defs/Nope"}}})
    assert info.value.path == "/properties/x"


def test_inline_refs_bounds_blowup() -> None:
    # Each level references the next twice: 2**30 nodes if expanded naively.
    defs = {
        f"L{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/L{i + 1}"}}}
        for i in range(30)
    }
    for i in range(30):
        defs[f"L{i}"]["properties"]["b"] = {"$ref": f"#/$defs/L{i + 1}"}
    defs["L30"] = {"type": "string"}
    with pytest.raises(ToolSchemaError, match="more than 500 subschemas"):
        inline_refs({"$ref": "#/$defs/L0", "$defs": defs}, max_nodes=500)
    with pytest.raises(ValueError, match="recursion_limit"):
        inline_refs({}, recursion_limit=-1)


# --------------------------------------------------------------------------------------------
# Tool names


def _sha(server: str, tool: str, n: int = 6) -> str:
    return hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:n]


def test_clean_names_are_kept_and_reverse_lookup_works() -> None:
    names = ToolNameMap([ToolSpec("github", "create_issue"), ("fs", "read-file")])
    assert names.provider_name("github", "create_issue") == "github__create_issue"
    assert names.provider_name("fs", "read-file") == "fs__read-file"
    assert names.resolve("github__create_issue") == ("github", "create_issue")
    assert names.resolve("nope") is None
    assert "fs__read-file" in names and len(names) == 2
    assert dict(names.items()) == {
        "fs__read-file": ("fs", "read-file"),
        "github__create_issue": ("github", "create_issue"),
    }
    with pytest.raises(KeyError, match="no tool 'x'"):
        names.provider_name("github", "x")


def test_sanitised_and_truncated_names_carry_a_stable_hash() -> None:
    long_tool = "a_really_long_tool_name_" * 4
    names = ToolNameMap(
        [("notion", "notion.create page"), ("srv", "café"), ("srv", long_tool), ("1pw", "get")]
    )
    assert names.provider_name("notion", "notion.create page") == (
        f"notion__notion_create_page_{_sha('notion', 'notion.create page')}"
    )
    assert names.provider_name("srv", "café") == f"srv__caf__{_sha('srv', 'café')}"
    truncated = names.provider_name("srv", long_tool)
    assert len(truncated) == 64 and truncated.endswith("_" + _sha("srv", long_tool))
    assert truncated.startswith("srv__a_really_long")
    # Gemini: a name must start with a letter or underscore.
    assert names.provider_name("1pw", "get") == f"_1pw__get_{_sha('1pw', 'get')}"


def test_colliding_names_are_separated() -> None:
    # ("a.b", "x") sanitises to a_b__x, which ("a_b", "x") is verbatim; and a clean name can
    # equal another tool's hashed name.
    hashed = f"s__x__{_sha('s', 'x.')}"
    clean_lookalike = ("s", f"x__{_sha('s', 'x.')}")
    pairs = [("a.b", "x"), ("a_b", "x"), ("s", "x."), clean_lookalike]
    names = ToolNameMap(pairs)
    assigned = [names.provider_name(*p) for p in pairs]
    assert len(set(assigned)) == len(pairs)
    assert names.provider_name("a_b", "x") == "a_b__x"  # no clash with it: stays clean
    assert hashed not in assigned  # both sides of that clash took a longer hash
    for pair in pairs:
        assert names.resolve(names.provider_name(*pair)) == pair


def test_names_do_not_depend_on_order_or_process() -> None:
    pairs = [(f"srv{i % 3}", f"tool.{i}") for i in range(30)] + [("a.b", "x"), ("a_b", "x")]
    expected = dict(ToolNameMap(pairs).items())
    shuffled = pairs[:]
    random.Random(7).shuffle(shuffled)
    assert dict(ToolNameMap(shuffled).items()) == expected
    code = (
        "import json,sys; from chia_async.loop.schema import ToolNameMap;"
        "print(json.dumps(dict(ToolNameMap(json.loads(sys.argv[1])).items())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(pairs)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert {k: tuple(v) for k, v in json.loads(out.stdout).items()} == expected


def test_restrict_keeps_names() -> None:
    names = ToolNameMap([("a.b", "x"), ("a_b", "x"), ("c", "d")])
    sub = names.restrict([("a.b", "x")])
    assert sub.provider_name("a.b", "x") == names.provider_name("a.b", "x")
    assert sub.resolve(names.provider_name("c", "d")) is None and len(sub) == 1


@given(st.lists(st.tuples(st.text(max_size=80), st.text(max_size=80)), max_size=12))
@settings(max_examples=150, deadline=None, database=None)
def test_any_names_map_to_valid_unique_reversible_names(pairs: list[tuple[str, str]]) -> None:
    names = ToolNameMap(pairs)
    assigned = {pair: names.provider_name(*pair) for pair in pairs}
    assert len(set(assigned.values())) == len(set(pairs))
    for pair, name in assigned.items():
        assert re.match(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", name)
        assert names.resolve(name) == pair


# --------------------------------------------------------------------------------------------
# OpenAI


def test_openai_declaration_shape() -> None:
    spec = ToolSpec("fs", "edit_file", "Edit a file", ZOD_SCHEMA)
    declaration = compile_for_openai(spec, "fs__edit_file")
    assert declaration == {
        "type": "function",
        "function": {
            "name": "fs__edit_file",
            "description": "Edit a file",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File path"},
                    "edits": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "oldText": {"type": "string"},
                                "newText": {"type": "string"},
                            },
                            "required": ["oldText", "newText"],
                            "additionalProperties": False,
                        },
                    },
                    "dryRun": {"type": "boolean", "default": False},
                    # draft-07 tuple items, spelled the 2020-12 way
                    "position": {
                        "type": "array",
                        "prefixItems": [{"type": "number"}, {"type": "number"}],
                    },
                },
                "required": ["path", "edits"],
                "additionalProperties": False,
            },
        },
    }
    check_openai(declaration)


def test_openai_cuts_long_descriptions() -> None:
    spec = ToolSpec("s", "t", "word " * 400)
    function = compile_for_openai(spec, "s__t")["function"]
    assert len(function["description"]) <= 1024 and function["description"].endswith("…")
    whole = compile_for_openai(spec, "s__t", max_description_length=None)["function"]
    assert whole["description"] == spec.description.strip()


def test_openai_strict_rules() -> None:
    class Filters(BaseModel):
        state: Literal["open", "closed"] | None = None
        since: datetime.date | None = None

    class ListIssues(BaseModel):
        repo: str = Field(min_length=1)
        limit: int = Field(30, ge=1, le=100)
        labels: list[str] = []
        filters: Filters = Filters()
        sort: Literal["created", "updated"] = "created"

    spec = pydantic_spec(ListIssues, "list_issues")
    parameters = compile_for_openai(spec, "x", strict=True)["function"]["parameters"]
    check_strict(parameters)
    props = parameters["properties"]
    assert parameters["required"] == ["repo", "limit", "labels", "filters", "sort"]
    assert props["repo"] == {"title": "Repo", "type": "string"}  # minLength is not in the subset
    assert props["limit"] == {
        "title": "Limit",
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 100,
    }
    assert props["labels"]["type"] == ["array", "null"]
    assert props["sort"] == {
        "title": "Sort",
        "anyOf": [{"enum": ["created", "updated"], "type": "string"}, {"type": "null"}],
    }
    assert props["filters"]["type"] == ["object", "null"]
    state = props["filters"]["properties"]["state"]
    assert {"type": "null"} in state["anyOf"]

    # Arguments the strict schema produces, made valid for the tool again.
    arguments = {
        "repo": "a/b",
        "limit": None,
        "labels": None,
        "filters": {"state": None, "since": None},
        "sort": None,
    }
    assert accepts(parameters, arguments)
    original = inline_refs(spec.input_schema)
    assert not accepts(original, arguments)
    stripped = strip_strict_nulls(spec, arguments)
    # state/since accept null themselves (Optional), so those nulls stay.
    assert stripped == {"repo": "a/b", "filters": {"state": None, "since": None}}
    assert accepts(original, stripped)


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"properties": {"m": {"type": "object", "additionalProperties": {}}}}, "free-form keys"),
        ({"properties": {"v": {}}}, "any type"),
        ({"properties": {"v": {"type": "array"}}}, "any type"),
    ],
)
def test_openai_strict_refuses_what_it_cannot_express(schema: dict[str, Any], reason: str) -> None:
    spec = ToolSpec("s", "t", "", schema)
    with pytest.raises(ToolSchemaError, match=reason) as info:
        compile_for_openai(spec, "s__t", strict=True)
    assert info.value.tool == "s/t"
    with captured_warnings() as records:
        compiled = compile_tools([spec], "openai", strict=True)
    assert "strict" not in compiled.declarations[0]["function"]
    assert len(records) == 1 and "s/t sent without strict mode" in records[0].getMessage()


def test_openai_strict_limits() -> None:
    deep: dict[str, Any] = {"type": "object", "properties": {"leaf": {"type": "string"}}}
    for _ in range(10):
        deep = {"type": "object", "properties": {"n": deep}}
    with pytest.raises(ToolSchemaError, match="nested more than 10"):
        compile_for_openai(ToolSpec("s", "t", "", deep), "t", strict=True)
    wide = {"type": "object", "properties": {"e": {"enum": list(range(1001))}}}
    with pytest.raises(ToolSchemaError, match="more than 1000 enum values"):
        compile_for_openai(ToolSpec("s", "t", "", wide), "t", strict=True)


# --------------------------------------------------------------------------------------------
# Anthropic and Bedrock


def test_anthropic_declaration_and_root_union() -> None:
    spec = REALISTIC["root_union"]
    declaration = compile_for_anthropic(spec, "notion__create-attachment")
    assert declaration == {
        "name": "notion__create-attachment",
        "description": "Attach",
        "input_schema": {
            "type": "object",
            "properties": {
                "content": {"type": "string"},
                "name": {"type": "string"},
                "source_url": {"type": "string"},
            },
            "required": ["name"],  # the only property every variant requires
        },
    }
    check_anthropic(declaration)
    # Every argument set the server accepted is still accepted.
    for arguments in ({"content": "x", "name": "n"}, {"source_url": "u", "name": "n"}):
        assert accepts(ROOT_UNION_SCHEMA, arguments)
        assert accepts(declaration["input_schema"], arguments)


def test_required_alternatives_union_is_dropped_not_fatal() -> None:
    schema = compile_for_anthropic(REALISTIC["required_alternatives"], "t")["input_schema"]
    assert "anyOf" not in schema and schema["required"] == ["project"]
    assert set(schema["properties"]) == {"project", "paths", "scopes"}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string"},
        {"anyOf": [{"type": "object"}, {"type": "array"}]},
        {"allOf": [{"type": "object"}, {"type": "string"}]},  # contradicts itself
    ],
)
def test_non_object_roots_are_schema_errors(schema: dict[str, Any]) -> None:
    spec = ToolSpec("srv", "bad", "", schema)
    for compiler in (compile_for_openai, compile_for_anthropic, compile_for_bedrock):
        with pytest.raises(ToolSchemaError) as info:
            compiler(spec, "srv__bad")
        assert "srv/bad" in str(info.value) and isinstance(info.value, ValueError)


def test_bedrock_declaration_omits_empty_description() -> None:
    declaration = compile_for_bedrock(ToolSpec("srv", "ping", "   "), "srv__ping")
    assert declaration == {
        "toolSpec": {
            "name": "srv__ping",
            "inputSchema": {"json": {"type": "object", "properties": {}}},
        }
    }
    check_bedrock([declaration])
    with pytest.raises(botocore.exceptions.ParamValidationError, match="valid min length: 1"):
        check_bedrock([{"toolSpec": {**declaration["toolSpec"], "description": ""}}])


def test_json_schema_providers_only_loosen() -> None:
    """Whatever the tool accepted, the compiled schema accepts too."""
    spec = REALISTIC["pydantic_create_issue"]
    original = inline_refs(spec.input_schema)
    arguments = [
        {"repo": "a/b", "title": "t", "color": "red"},
        {
            "repo": "a/b",
            "title": "t",
            "color": "green",
            "priority": 2,
            "address": {"street": "s", "city": "c", "zip": None},
            "pet": {"pet_type": "dog", "barks": 1.5},
            "due": "2024-01-01T00:00:00Z",
        },
    ]
    for provider in ("openai", "anthropic", "bedrock"):
        (declaration,) = compile_tools([spec], provider).declarations
        for instance in arguments:
            assert accepts(original, instance)
            assert accepts(parameters(provider, declaration), instance)


# --------------------------------------------------------------------------------------------
# Gemini


def test_gemini_translation() -> None:
    spec = pydantic_spec(CreateIssue, "create_issue", "github")
    declaration = compile_for_gemini(spec, "github__create_issue")
    check_gemini(declaration)
    props = declaration["parameters"]["properties"]
    assert props["mode"] == {"type": "STRING", "enum": ["fast", "slow"]}
    assert props["kind"] == {"type": "STRING", "enum": ["issue"]}  # const -> one-value enum
    assert props["color"] == {"type": "STRING", "enum": ["red", "green"]}
    # An integer enum keeps its type (the tool wants 2, not "2"); the values move to the text.
    assert props["priority"] == {"type": "INTEGER", "description": "Allowed values: 1, 2."}
    assert props["address"]["nullable"] is True
    assert props["address"]["description"] == "Where to ship"  # the field's text wins
    assert props["address"]["required"] == ["street", "city"]
    assert props["limit"] == {"type": "INTEGER", "minimum": 1, "maximum": 100, "nullable": True}
    assert props["due"] == {"type": "STRING", "format": "date-time", "nullable": True}
    assert props["request_id"] == {
        "type": "STRING",
        "description": "Format: uuid.",
        "nullable": True,
    }
    assert props["repo"]["pattern"] == r"^[\w-]+/[\w.-]+$"
    assert props["pet"]["anyOf"][0]["properties"]["pet_type"] == {"type": "STRING", "enum": ["cat"]}
    assert not any("title" in node for node in walk_gemini(declaration["parameters"]))
    assert set(declaration["parameters"]["required"]) == {"repo", "title", "color"}


def test_gemini_unions_nulls_and_constants() -> None:
    schema = {
        "type": "object",
        "properties": {
            "either": {"type": ["string", "integer", "null"]},
            "choice": {"anyOf": [{"const": "a"}, {"const": "b"}, {"type": "null"}]},
            "mixed": {"enum": ["x", 1, None]},
            "only_null": {"type": "null"},
            "any": {"description": "anything"},
            "flags": {"type": "array"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "format": "percent"},
            "count": {"type": "integer", "exclusiveMaximum": 10},
            "merged": {"allOf": [{"type": "string"}, {"maxLength": 5}]},
            "preset": {"enum": [{"a": 1}, "custom"]},  # the object constant has no form
        },
    }
    declaration = compile_for_gemini(ToolSpec("s", "t", "", schema), "s__t")
    check_gemini(declaration)
    props = declaration["parameters"]["properties"]
    assert props["either"] == {
        "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}],
        "nullable": True,
    }
    assert props["choice"] == {"type": "STRING", "enum": ["a", "b"], "nullable": True}
    assert props["mixed"] == {
        "anyOf": [
            {"type": "STRING", "enum": ["x"]},
            {"type": "INTEGER", "description": "Must be 1."},
        ],
        "nullable": True,
    }
    assert props["only_null"] == {"type": "STRING", "nullable": True}
    assert props["any"] == {"type": "STRING", "description": "anything"}
    assert props["flags"] == {"type": "ARRAY", "items": {"type": "STRING"}}
    assert props["ratio"] == {"type": "NUMBER", "minimum": 0, "description": "Format: percent."}
    assert props["count"] == {"type": "INTEGER", "maximum": 9}
    assert props["merged"] == {"type": "STRING", "maxLength": 5}
    assert props["preset"] == {"type": "STRING", "enum": ["custom"]}


def test_gemini_free_form_objects() -> None:
    optional = ToolSpec("s", "search", "Search", Search.model_json_schema())
    declaration = compile_for_gemini(optional, "s__search")
    check_gemini(declaration)
    # `filters: dict[str, str]` has no Gemini form; being optional, it is left out.
    assert set(declaration["parameters"]["properties"]) == {"query", "extra"}

    required = {
        "type": "object",
        "properties": {"headers": {"type": "object", "additionalProperties": {"type": "string"}}},
        "required": ["headers"],
    }
    with pytest.raises(ToolSchemaError, match="required property 'headers' has no Gemini") as info:
        compile_for_gemini(ToolSpec("http", "get", "", required), "http__get")
    assert info.value.path == "/properties/headers" and info.value.tool == "http/get"

    # No parameters at all: the key is left out rather than an empty OBJECT sent.
    for spec in (REALISTIC["no_arguments"], REALISTIC["empty_schema"]):
        declaration = compile_for_gemini(spec, "srv__x")
        assert "parameters" not in declaration
        check_gemini(declaration)


def test_gemini_schema_accepts_what_the_tool_accepts() -> None:
    spec = ToolSpec("fs", "edit_file", "Edit", ZOD_SCHEMA)
    parameters = compile_for_gemini(spec, "fs__edit_file")["parameters"]
    as_json_schema = gemini_to_json_schema(parameters)
    arguments = {"path": "p", "edits": [{"oldText": "a", "newText": "b"}], "position": [1, 2.5]}
    assert accepts(ZOD_SCHEMA, arguments)
    assert accepts(as_json_schema, arguments)


def test_gemini_recursive_schema_is_cut_not_endless() -> None:
    declaration = compile_for_gemini(pydantic_spec(Node, "tree"), "srv__tree")
    check_gemini(declaration)
    depth, node = 0, declaration["parameters"]
    while "children" in node["properties"]:
        node, depth = node["properties"]["children"]["items"], depth + 1
    assert depth == 2  # the cut free-form level is optional, so it is left out


# --------------------------------------------------------------------------------------------
# compile_tools


def test_compile_tools_drops_one_bad_tool_with_a_warning() -> None:
    good = REALISTIC["zod_edit"]
    bad = ToolSpec("http", "get", "", {"type": "array"})
    duplicate = ToolSpec(good.server, good.name, "again", {})
    with captured_warnings() as records:
        compiled = compile_tools([good, bad, duplicate], "anthropic")
    assert [d["name"] for d in compiled.declarations] == ["fs__edit_file"]
    assert compiled.names.resolve("fs__edit_file") == ("fs", "edit_file")
    assert compiled.names.resolve("http__get") is None  # never offered, never routed
    assert [(d.spec, d.reason.split(" (")[0]) for d in compiled.dropped] == [
        (duplicate, "duplicate server and tool name"),
        (bad, "the input schema must describe an object, not 'array'"),
    ]
    messages = [r.getMessage() for r in records]
    assert any("fs/edit_file is listed twice" in m for m in messages)
    assert any("http/get dropped" in m and "must describe an object" in m for m in messages)


def test_compile_tools_survives_compiler_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: object, node: object, path: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(schema_module._GeminiConverter, "convert", explode)
    with captured_warnings() as records:
        compiled = compile_tools([REALISTIC["zod_edit"]], "gemini")
    assert not compiled.declarations and "RuntimeError: boom" in compiled.dropped[0].reason
    assert records[0].exc_info is not None


def test_absurdly_deep_schemas_are_dropped_not_crashed() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"n": deep}}
    with pytest.raises(ToolSchemaError, match="nested more than 100 levels"):
        inline_refs(deep)
    for provider in PROVIDERS:
        compiled = compile_tools([ToolSpec("s", "deep", "", deep)], provider)
        assert not compiled.declarations and "nested more than 100" in compiled.dropped[0].reason


def test_compile_tools_rejects_unknown_providers() -> None:
    with pytest.raises(ValueError, match="unknown provider 'cohere'"):
        compile_tools([], "cohere")


def test_compile_functions_check_names() -> None:
    spec = REALISTIC["no_arguments"]
    with pytest.raises(ValueError, match="build names with ToolNameMap"):
        compile_for_openai(spec, "has space")
    with pytest.raises(ValueError, match="gemini tool name '1x'"):
        compile_for_gemini(spec, "1x")
    assert compile_for_anthropic(spec, "a" * 100)["name"] == "a" * 100


def test_tool_schema_error_pickles_and_names_the_tool() -> None:
    error = ToolSchemaError("no form", "srv/tool", "/properties/x")
    assert str(error) == "tool 'srv/tool': no form (at #/properties/x)"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.reason, clone.tool, clone.path, str(clone)) == (
        "no form",
        "srv/tool",
        "/properties/x",
        str(error),
    )


def test_tool_spec_from_mcp_tool() -> None:
    mcp_types = pytest.importorskip("mcp.types")
    tool = mcp_types.Tool(name="add", description=None, inputSchema={"type": "object"})
    spec = ToolSpec.from_mcp("calc", tool)
    assert spec == ToolSpec("calc", "add", "", {"type": "object"})
    raw = tool.model_dump(by_alias=True)  # the wire form: inputSchema
    assert ToolSpec.from_mcp("calc", raw) == spec
    assert hash(spec) == hash(ToolSpec("calc", "add", "", {"other": "schema"}))
    assert spec.label == "calc/add" and spec.key == ("calc", "add")


def test_all_of_is_merged_exactly_where_it_can_be() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"allOf": [{"type": "number", "minimum": 0}, {"type": "integer", "minimum": 2}]},
            "u": {
                "allOf": [
                    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "boolean"}]},
                ]
            },
            "o": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ]
            },
        },
    }
    props = compile_for_anthropic(ToolSpec("s", "t", "", schema), "t")["input_schema"]["properties"]
    assert props["n"] == {"type": "integer", "minimum": 2}
    # string & (string, maxLength 3) is the only possible pairing
    assert props["u"] == {"anyOf": [{"type": "string", "maxLength": 3}]}
    assert props["o"] == {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    impossible = {"properties": {"x": {"allOf": [{"enum": ["a"]}, {"enum": ["b"]}]}}}
    with pytest.raises(ToolSchemaError, match="no common value") as info:
        compile_for_anthropic(ToolSpec("s", "t", "", impossible), "t")
    assert info.value.path == "/properties/x"


def test_normalisation_of_older_spellings() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
            "o": {"type": "string", "nullable": True},
            "r": {"type": "string", "required": True},
            "t": {"type": "any"},
        },
        "dependencies": {"a": ["b"]},
    }
    parameters = compile_for_anthropic(ToolSpec("s", "t", "", schema), "t")["input_schema"]
    jsonschema.Draft202012Validator.check_schema(parameters)
    assert parameters == {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "exclusiveMinimum": 0},
            "o": {"type": ["string", "null"]},
            "r": {"type": "string"},
            "t": {},
        },
        "required": ["r"],
        "dependentRequired": {"a": ["b"]},
    }


# --------------------------------------------------------------------------------------------
# Property test: whatever pydantic model a server is written with, every provider gets a
# declaration its SDK accepts, or the tool is dropped with a warning — never an exception.


class Shape(BaseModel):
    kind: Literal["circle", "square"]
    size: float = Field(gt=0)


class Tree(BaseModel):
    value: int
    left: Tree | None = None
    right: Tree | None = None


_names = iter(range(10**9))

_leaves: st.SearchStrategy[Any] = st.sampled_from(
    [
        int,
        str,
        float,
        bool,
        bytes,
        datetime.datetime,
        datetime.date,
        uuid.UUID,
        Any,
        Color,
        Priority,
        Shape,
        Tree,
        Annotated[int, Field(ge=0, lt=10)],
        Annotated[str, Field(min_length=1, max_length=5, pattern="^[a-z]+$")],
        Annotated[float, Field(multiple_of=0.5)],
    ]
) | st.lists(
    st.one_of(st.text("abcxyz", min_size=1, max_size=4), st.integers(-3, 3)),
    min_size=1,
    max_size=4,
    unique=True,
).map(lambda values: Literal[tuple(values)])


def _models(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(
        st.tuples(children, st.booleans(), st.booleans()), min_size=0, max_size=4
    ).flatmap(lambda fields: st.booleans().map(lambda forbid: _make_model(fields, forbid=forbid)))


def _make_model(fields: list[tuple[Any, bool, bool]], *, forbid: bool) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for i, (annotation, optional, described) in enumerate(fields):
        info = Field(None, description=f"field {i}" if described else None)
        if optional:
            definitions[f"f{i}"] = (annotation | None, info)
        else:
            definitions[f"f{i}"] = (annotation, Field(description=info.description))
    config = ConfigDict(extra="forbid") if forbid else None
    return pydantic.create_model(f"M{next(_names)}", __config__=config, **definitions)


_types: st.SearchStrategy[Any] = st.recursive(
    _leaves,
    # Free-form dicts are one choice in eight: each one anywhere in a required field makes
    # the tool undeclarable for Gemini, and the other shapes deserve the examples.
    lambda children: st.one_of(
        children.map(lambda t: list[t]),  # type: ignore[valid-type]
        children.map(lambda t: list[t]),  # type: ignore[valid-type]
        st.tuples(children, children).map(lambda ts: ts[0] | ts[1]),
        st.tuples(children, children).map(lambda ts: ts[0] | ts[1]),
        st.tuples(children, children).map(lambda ts: tuple[ts[0], ts[1]]),  # type: ignore[misc]
        _models(children),
        _models(children),
        children.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
    ),
    max_leaves=8,
)


def _json_schema(model: type[BaseModel]) -> dict[str, Any] | None:
    try:
        return model.model_json_schema()
    except (
        pydantic.PydanticSchemaGenerationError,
        pydantic.PydanticInvalidForJsonSchema,
        TypeError,
    ):
        return None


@given(st.lists(_types, min_size=1, max_size=4), st.booleans())
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_any_pydantic_schema_compiles_for_every_provider_or_is_dropped(
    field_types: list[Any], forbid: bool
) -> None:
    try:
        model = _make_model(
            [(t, i % 2 == 1, i % 3 == 0) for i, t in enumerate(field_types)], forbid=forbid
        )
    except (TypeError, pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError):
        return
    schema = _json_schema(model)
    if schema is None:
        return
    spec = ToolSpec("srv", "tool", "A tool.", schema)
    for provider in PROVIDERS:
        for strict in (False, True) if provider == "openai" else (False,):
            with captured_warnings() as records:
                compiled = compile_tools([spec], provider, strict=strict)
            check(provider, compiled)
            if compiled.dropped:
                # Only for what Gemini truly cannot declare, never a compiler failure.
                assert provider == "gemini", (provider, compiled.dropped)
                assert "free-form object" in compiled.dropped[0].reason, compiled.dropped
                assert any("srv/tool dropped" in r.getMessage() for r in records)
            else:
                assert len(compiled.declarations) == 1
