"""Tool-schema compilers: MCP tool definitions -> each provider's tool declarations.

An MCP server describes each tool by a name, a description and an ``inputSchema`` in JSON
Schema — in practice pydantic or zod output: ``$defs``/``$ref``, ``anyOf`` unions with
``{"type": "null"}``, ``const``, type lists, ``additionalProperties``, formats, defaults.
Every provider accepts a different dialect and different tool names, so the tool loop compiles
each :class:`ToolSpec` once per request with :func:`compile_tools`:

* openai — ``{"type": "function", "function": {name, description, parameters}}``, JSON Schema;
* anthropic — ``{name, description, input_schema}``, JSON Schema;
* bedrock — ``{"toolSpec": {name, description, inputSchema: {"json": schema}}}``, JSON Schema;
* gemini — one ``functionDeclarations`` entry ``{name, description, parameters}`` in the
  OpenAPI 3.0 subset of ``google.genai.types.Schema``.

Every schema goes through the same front half: :func:`inline_refs` (local ``$ref`` resolved,
recursion cut at a depth, ``$defs`` dropped — several OpenAI-compatible servers and Gemini do
not resolve references), then a normalisation to JSON Schema 2020-12 spellings (draft-07 tuple
``items``, draft-04 boolean ``exclusiveMinimum``, OpenAPI ``nullable``, ``dependencies``; meta
keywords such as ``$schema`` dropped; ``allOf`` merged into one schema), then an object root:
every provider rejects a top-level union, ``enum``, ``const`` or ``not``, so a root ``anyOf`` of
objects becomes one object with every variant's properties, required only where all variants
require them.

**Loosen, never corrupt.** When a provider cannot express a constraint the compiler drops it,
so the model may send arguments the tool then rejects — the tool validates its own input and
the error goes back to the model. It never rewrites a value's type (an integer enum stays an
integer, with the allowed values moved into the description) because the model's arguments go
to the tool unchanged. Where no honest form exists (a required free-form object for Gemini) it
raises :class:`ToolSchemaError`; :func:`compile_tools` then drops that one tool with a warning.

Provider rules applied, and where each was confirmed:

* **Names** — ``^[a-zA-Z0-9_-]{1,64}$`` for OpenAI (``FunctionDefinition.name`` in the openai
  SDK) and Bedrock (``ToolName`` in botocore's bedrock-runtime model: 1-64, ``[a-zA-Z0-9_-]+``);
  Anthropic accepts that set too (up to 128 characters); Gemini also demands a letter or
  underscore first (Vertex ``FunctionDeclaration.name`` reference). :class:`ToolNameMap` meets
  all four at once.
* **OpenAI** — root must be ``type: object`` with no ``oneOf``/``anyOf``/``allOf``/``enum``/
  ``not`` (400 ``invalid_function_parameters``); ``description`` at most 1024 characters (400
  ``string_above_max_length``). ``strict=True`` follows the Structured Outputs subset, as the
  SDK's own ``openai.lib._pydantic._ensure_strict_json_schema`` does: every object
  ``additionalProperties: false`` with all properties required, optional ones made nullable
  (undo with :func:`strip_strict_nulls`); keywords outside the subset dropped; ``allOf``
  merged; no free-form objects or untyped values; at most 10 object levels, 5000 properties,
  1000 enum values.
* **Anthropic** — ``input_schema`` must be ``type: object`` (``ToolParam`` in the anthropic SDK)
  and "does not support oneOf, allOf, or anyOf at the top level" (the API's 400 text).
* **Bedrock** — ``toolSpec`` requires ``name`` and ``inputSchema``; ``description`` is optional
  but at least 1 character when present (botocore ``NonEmptyString``), so an empty one is
  omitted. Claude on Bedrock applies Anthropic's top-level rule.
* **Gemini** — ``parameters`` keys are those of ``google.genai.types.Schema`` (it forbids extra
  fields); the API answers "Unknown name" for ``$schema``, ``additionalProperties``, ``const``,
  ``exclusiveMinimum``, ``propertyNames``; a type list is rejected ("Proto field is not
  repeating"), so nulls become ``nullable: true``; Vertex requires a ``type`` on every node;
  ``OBJECT`` needs non-empty ``properties`` ("should be non-empty for OBJECT type"), and
  ``properties``/``required`` only on objects; ``required`` may only name declared properties;
  ``enum`` only on ``STRING``; ``format`` only ``date-time``/``enum`` for ``STRING``,
  ``int32``/``int64`` for ``INTEGER`` and ``float``/``double`` for ``NUMBER``. A tool without
  parameters omits ``parameters`` rather than sending an empty object.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import unquote

__all__ = [
    "PROVIDERS",
    "CompiledTools",
    "DroppedTool",
    "Provider",
    "ToolNameMap",
    "ToolSchemaError",
    "ToolSpec",
    "compile_for_anthropic",
    "compile_for_bedrock",
    "compile_for_gemini",
    "compile_for_openai",
    "compile_tools",
    "inline_refs",
    "strip_strict_nulls",
]

logger = logging.getLogger("chia_async.loop")

Provider = Literal["openai", "anthropic", "bedrock", "gemini"]
#: The providers :func:`compile_tools` knows, in the spelling it takes.
PROVIDERS: Final[tuple[Provider, ...]] = ("openai", "anthropic", "bedrock", "gemini")

JsonSchema = dict[str, Any]

#: OpenAI answers 400 ``string_above_max_length`` for a longer function description.
OPENAI_DESCRIPTION_LIMIT: Final = 1024
NAME_LIMIT: Final = 64
_HASH_LENGTH: Final = 6


class ToolSchemaError(ValueError):
    """A tool's input schema has no form the provider accepts.

    ``reason`` says why, ``tool`` names the tool as ``"<server>/<tool>"`` (empty when a bare
    schema was compiled, as by :func:`inline_refs`), ``path`` is a JSON pointer (``#/...``)
    into the tool's schema after ``$ref`` inlining, so it follows the arguments' structure.
    Picklable with all fields.
    """

    def __init__(self, reason: str, tool: str = "", path: str = "") -> None:
        self.reason = reason
        self.tool = tool
        self.path = path
        subject = f"tool {tool!r}: " if tool else ""
        super().__init__(f"{subject}{reason} (at #{path})")

    def with_tool(self, tool: str) -> ToolSchemaError:
        """The same error, naming ``tool``."""
        return ToolSchemaError(self.reason, tool, self.path)

    def __reduce__(self) -> tuple[type[ToolSchemaError], tuple[str, str, str]]:
        return (type(self), (self.reason, self.tool, self.path))


def _object_schema() -> JsonSchema:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One MCP tool as the tool loop offers it.

    ``server`` is the :class:`~chia_async.tools.ChiaTool` name, ``name`` the tool's own MCP
    name, ``input_schema`` its JSON Schema as the server sent it. Compilers never mutate
    ``input_schema``. A ``None`` description counts as empty."""

    server: str
    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=_object_schema)

    @classmethod
    def from_mcp(cls, server: str, tool: Any) -> ToolSpec:
        """From one tool the server called ``server`` listed: an ``mcp.types.Tool`` (whose
        schema attribute is ``input_schema`` in mcp 2, ``inputSchema`` before) or the raw
        ``tools/list`` entry as a dict."""

        def field(*names: str) -> Any:
            for name in names:
                value = tool.get(name) if isinstance(tool, Mapping) else getattr(tool, name, None)
                if value is not None:
                    return value
            return None

        schema = field("input_schema", "inputSchema")
        return cls(
            server=server,
            name=str(field("name")),
            description=field("description") or "",
            input_schema=schema if isinstance(schema, Mapping) else _object_schema(),
        )

    @property
    def key(self) -> tuple[str, str]:
        """``(server, name)``: what identifies the tool."""
        return (self.server, self.name)

    @property
    def label(self) -> str:
        """``"<server>/<tool>"``, for messages."""
        return f"{self.server}/{self.name}"

    def __hash__(self) -> int:
        # The generated hash would hash the schema dict and fail; equal specs share these.
        return hash((self.server, self.name, self.description))


# --------------------------------------------------------------------------------------------
# Provider tool names


_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
#: What each provider accepts as a tool name (ToolNameMap's names fit all of them).
_NAME_PATTERNS: Final[Mapping[str, re.Pattern[str]]] = {
    "openai": re.compile(r"^[A-Za-z0-9_-]{1,64}$"),
    "anthropic": re.compile(r"^[A-Za-z0-9_-]{1,128}$"),
    "bedrock": re.compile(r"^[A-Za-z0-9_-]{1,64}$"),
    "gemini": re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$"),
}


class ToolNameMap:
    """Provider tool names for a set of tools, and the way back.

    The scheme, identical for every provider and computed from ``(server, tool)`` alone:

    1. ``<server>__<tool>``, every character outside ``[A-Za-z0-9_-]`` replaced by ``_``, and
       an ``_`` put in front if it would not start with a letter or underscore (Gemini's rule).
    2. If step 1 changed anything, or the result is over 64 characters, the name is cut to
       leave room for ``_`` and six hex digits of ``sha256("<server>\\0<tool>")``, which are
       appended. A name that needed no change is used as it is.
    3. If two tools still end up with the same name, every tool in that clash takes a hash
       suffix, lengthened by two digits until the clash is gone.

    So names are the same in every run and process, do not depend on the order of the tools,
    and only change for a tool when a new tool clashes with it. :meth:`resolve` maps a name the
    model used back to ``(server, tool)``.
    """

    __slots__ = ("_by_key", "_by_name")

    def __init__(self, specs: Iterable[ToolSpec | tuple[str, str]] = ()) -> None:
        keys = sorted({s.key if isinstance(s, ToolSpec) else (s[0], s[1]) for s in specs})
        self._by_key: dict[tuple[str, str], str] = _assign_names(keys)
        self._by_name: dict[str, tuple[str, str]] = {n: k for k, n in self._by_key.items()}

    @classmethod
    def _from_assignment(cls, by_key: Mapping[tuple[str, str], str]) -> ToolNameMap:
        names = cls()
        names._by_key = dict(by_key)
        names._by_name = {n: k for k, n in by_key.items()}
        return names

    def provider_name(self, server: str, tool: str) -> str:
        """The name the provider sees for ``tool`` of ``server``; KeyError if not in the map."""
        try:
            return self._by_key[(server, tool)]
        except KeyError:
            raise KeyError(f"no tool {tool!r} of server {server!r} in this map") from None

    def resolve(self, provider_name: str) -> tuple[str, str] | None:
        """``(server, tool)`` for a name the model used, or None for a name not in the map."""
        return self._by_name.get(provider_name)

    def restrict(self, keys: Iterable[tuple[str, str]]) -> ToolNameMap:
        """A map of only ``keys``, keeping the names assigned here."""
        return ToolNameMap._from_assignment({k: self._by_key[k] for k in keys})

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        """``(provider name, (server, tool))`` pairs, ordered by ``(server, tool)``."""
        for key, name in sorted(self._by_key.items()):
            yield name, key

    def __contains__(self, provider_name: object) -> bool:
        return provider_name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items())

    def __len__(self) -> int:
        return len(self._by_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolNameMap) and self._by_key == other._by_key

    def __repr__(self) -> str:
        return f"ToolNameMap({dict(self.items())!r})"


def _clean_name(server: str, tool: str) -> str:
    clean = _INVALID_NAME_CHARS.sub("_", f"{server}__{tool}")
    return clean if clean[0].isalpha() or clean[0] == "_" else "_" + clean


def _initial_hash_length(server: str, tool: str) -> int:
    base = f"{server}__{tool}"
    return 0 if _clean_name(server, tool) == base and len(base) <= NAME_LIMIT else _HASH_LENGTH


def _candidate_name(server: str, tool: str, hash_length: int) -> str:
    clean = _clean_name(server, tool)
    if hash_length == 0:
        return clean
    # NUL cannot appear in either name, so ("a/b", "c") and ("a", "b/c") hash apart.
    suffix = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:hash_length]
    return f"{clean[: NAME_LIMIT - 1 - len(suffix)]}_{suffix}"


def _assign_names(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    hash_lengths = {key: _initial_hash_length(*key) for key in keys}
    names = {key: _candidate_name(*key, hash_lengths[key]) for key in keys}
    while True:
        groups: dict[str, list[tuple[str, str]]] = {}
        for key, name in names.items():
            groups.setdefault(name, []).append(key)
        clashes = [group for group in groups.values() if len(group) > 1]
        if not clashes:
            return names
        for group in clashes:
            for key in group:
                length = hash_lengths[key]
                hash_lengths[key] = _HASH_LENGTH if length == 0 else length + 2
                if hash_lengths[key] > 40:  # distinct sha256 prefixes this long never clash
                    raise AssertionError(f"tool names still clash: {group}")
                names[key] = _candidate_name(*key, hash_lengths[key])


def _check_name(name: str, provider: str) -> None:
    pattern = _NAME_PATTERNS[provider]
    if not isinstance(name, str) or not pattern.match(name):
        raise ValueError(
            f"{provider} tool name {name!r} must match {pattern.pattern}; "
            "build names with ToolNameMap"
        )


# --------------------------------------------------------------------------------------------
# Walking JSON Schema structurally: keywords that hold subschemas, so property *names* such as
# "$defs" or "items" are never mistaken for keywords, and data (enum, const, default) is never
# walked as schema.

_SUBSCHEMA_MAPS: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_SUBSCHEMA: Final = frozenset(
    {
        "additionalProperties",
        "items",
        "additionalItems",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_SUBSCHEMA_LISTS: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
#: Keywords that only describe; they may sit next to a ``$ref`` and be laid over its target.
_ANNOTATIONS: Final = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "example",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$comment",
        "nullable",
    }
)
_META_KEYWORDS: Final = (
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "$dynamicAnchor",
    "$recursiveAnchor",
    "$vocabulary",
    # OpenAPI's discriminator maps to "#/$defs/..." strings that dangle once refs are inlined.
    "discriminator",
)
_JSON_TYPES: Final = ("object", "array", "string", "number", "integer", "boolean", "null")
_REF_KEYWORDS: Final = ("$ref", "$dynamicRef", "$recursiveRef")


def _escape(token: object) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _map_subschemas(
    node: Mapping[str, Any], visit: Callable[[Any, str], Any], path: str
) -> JsonSchema:
    """A copy of ``node`` with ``visit(subschema, pointer)`` applied to each direct subschema;
    data values are deep-copied so the result never shares state with the input."""
    out: JsonSchema = {}
    for key, value in node.items():
        where = f"{path}/{_escape(key)}"
        if key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: visit(sub, f"{where}/{_escape(name)}") for name, sub in value.items()}
        elif key in _SUBSCHEMA and isinstance(value, Mapping | bool):
            out[key] = visit(value, where)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [visit(sub, f"{where}/{i}") for i, sub in enumerate(value)]
        elif key == "dependencies" and isinstance(value, Mapping):
            out[key] = {
                name: visit(sub, f"{where}/{_escape(name)}")
                if isinstance(sub, Mapping | bool)
                else copy.deepcopy(sub)
                for name, sub in value.items()
            }
        else:
            out[key] = copy.deepcopy(value)
    return out


def _subschemas(node: Any) -> Iterator[Any]:
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
            yield from value.values()
        elif key in _SUBSCHEMA and isinstance(value, Mapping):
            yield value
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            yield from value


# --------------------------------------------------------------------------------------------
# $ref inlining

#: Subschemas one inlined schema may have; a schema that references a large definition from
#: many places grows multiplicatively, and a request that size helps no model.
DEFAULT_MAX_NODES: Final = 20_000
_MAX_NESTING: Final = 100
_REMOTE: Final = object()


def inline_refs(
    schema: Mapping[str, Any],
    *,
    recursion_limit: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> JsonSchema:
    """``schema`` with every local reference replaced by what it points at.

    Resolves ``$ref`` (and ``$dynamicRef``/``$recursiveRef``) that are JSON pointers into the
    schema (``#/$defs/X``, ``#/definitions/X``, ``#/properties/a``, ``#``) or ``$anchor``
    names (``#name``). Keywords next to a ``$ref`` are kept: annotations are laid over the
    target, anything else is combined with it through ``allOf``. A recursive definition is
    expanded ``recursion_limit`` times inside itself on any one path, then cut to a permissive
    schema (``{"type": "object"}`` with the target's title and description, for an object).
    Remote references (``https://...``) become ``{}``, which accepts anything. ``$defs`` and
    ``definitions`` are gone from the result. The input is never modified.

    Raises :class:`ToolSchemaError` for a local reference that points at nothing, a schema
    nested over 100 levels, or one that would have more than ``max_nodes`` subschemas.
    """
    if recursion_limit < 0:
        raise ValueError(f"recursion_limit must be >= 0, got {recursion_limit}")
    result = _RefInliner(schema, recursion_limit, max_nodes).inline(schema, "", (), 0)
    if isinstance(result, dict):
        return result
    # A root of `true` (or junk) accepts anything; `false` accepts nothing.
    return {"not": {}} if result is False else {}


class _RefInliner:
    def __init__(self, root: Mapping[str, Any], recursion_limit: int, max_nodes: int) -> None:
        self.root = root
        self.recursion_limit = recursion_limit
        self.max_nodes = max_nodes
        self.budget = max_nodes
        self._anchors: dict[str, Any] | None = None

    def inline(self, node: Any, path: str, active: tuple[int, ...], depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise ToolSchemaError(
                f"schema has more than {self.max_nodes} subschemas once $ref is inlined", "", path
            )
        if depth > _MAX_NESTING:
            raise ToolSchemaError(
                f"schema is nested more than {_MAX_NESTING} levels deep", "", path
            )
        if not isinstance(node, Mapping):
            return copy.deepcopy(node)

        def visit(sub: Any, where: str) -> Any:
            return self.inline(sub, where, active, depth + 1)

        ref_key = next((k for k in _REF_KEYWORDS if isinstance(node.get(k), str)), None)
        rest = {
            k: v
            for k, v in node.items()
            if k not in ("$defs", "definitions") and k not in _REF_KEYWORDS
        }
        siblings = _map_subschemas(rest, visit, path)
        if ref_key is None:
            return siblings
        ref = node[ref_key]
        target = self.resolve(ref, path)
        if target is _REMOTE:
            expanded: Any = {}
        elif active.count(id(target)) > self.recursion_limit:
            expanded = _cut(target)
        else:
            expanded = self.inline(target, path, (*active, id(target)), depth + 1)
        return _attach_siblings(expanded, siblings)

    def resolve(self, ref: str, path: str) -> Any:
        if not ref.startswith("#"):
            return _REMOTE
        fragment = unquote(ref[1:])
        if fragment.startswith("/") or fragment == "":
            node: Any = self.root
            for raw in fragment.split("/")[1:]:
                token = raw.replace("~1", "/").replace("~0", "~")
                if isinstance(node, Mapping) and token in node:
                    node = node[token]
                elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                    node = node[int(token)]
                else:
                    raise ToolSchemaError(f"$ref {ref!r} points at nothing", "", path)
        else:
            node = self.anchors().get(fragment)
        if not isinstance(node, Mapping | bool):
            raise ToolSchemaError(f"$ref {ref!r} does not point at a schema", "", path)
        return node

    def anchors(self) -> dict[str, Any]:
        if self._anchors is None:
            found: dict[str, Any] = {}
            pending: list[Any] = [self.root]
            while pending:
                node = pending.pop()
                if not isinstance(node, Mapping):
                    continue
                for key in ("$anchor", "$dynamicAnchor"):
                    if isinstance(node.get(key), str):
                        found.setdefault(node[key], node)
                for key in ("$id", "id"):  # draft-06/07 plain-name fragments: "$id": "#name"
                    value = node.get(key)
                    if isinstance(value, str) and value.startswith("#") and len(value) > 1:
                        found.setdefault(value[1:], node)
                pending.extend(_subschemas(node))
            self._anchors = found
        return self._anchors


def _cut(target: Any) -> Any:
    """What stands in for a recursive reference past the limit: a schema as permissive as the
    target's kind allows, keeping its title and description for the model."""
    if not isinstance(target, Mapping):
        return copy.deepcopy(target)
    out: JsonSchema = {}
    kind = target.get("type")
    if kind in ("object", "array"):
        out["type"] = kind
    elif "properties" in target:
        out["type"] = "object"
    for key in ("title", "description"):
        if isinstance(target.get(key), str):
            out[key] = target[key]
    return out


def _attach_siblings(expanded: Any, siblings: JsonSchema) -> Any:
    if not siblings or expanded is False:
        return expanded
    if expanded is True or not isinstance(expanded, dict):
        return siblings
    if set(siblings) <= _ANNOTATIONS:
        return {**expanded, **siblings}
    return {"allOf": [expanded, siblings]}


# --------------------------------------------------------------------------------------------
# Normalising to 2020-12 spellings, merging allOf, and the object root


def _normalise(node: Any, path: str) -> Any:
    """Older and OpenAPI spellings rewritten as JSON Schema 2020-12, malformed keywords dropped
    (a provider that validates the schema would refuse the whole request), ``allOf`` merged."""
    if not isinstance(node, Mapping):
        return node if isinstance(node, bool) else {}
    node = dict(node)
    for key in _META_KEYWORDS:
        node.pop(key, None)

    kind = node.get("type")
    if isinstance(kind, list):
        kinds = _unique([k for k in kind if k in _JSON_TYPES])
        if kinds:
            node["type"] = kinds[0] if len(kinds) == 1 else kinds
        else:
            del node["type"]
    elif "type" in node and kind not in _JSON_TYPES:
        del node["type"]  # "any", "int", ...: unknown names would fail validation

    if node.pop("nullable", None) is True:  # OpenAPI 3.0
        _allow_null(node)

    properties = node.get("properties")
    if "properties" in node and not isinstance(properties, Mapping):
        del node["properties"]
    elif isinstance(properties, Mapping):
        # Draft 3 marked required properties in place: "required": true.
        lifted = [
            n for n, s in properties.items() if isinstance(s, Mapping) and s.get("required") is True
        ]
        if lifted:
            node["properties"] = {
                n: ({k: v for k, v in s.items() if k != "required"} if n in lifted else s)
                for n, s in properties.items()
            }
            node["required"] = [*_string_list(node.get("required")), *lifted]
    if "required" in node:
        required = _unique(_string_list(node.get("required")))
        if required:
            node["required"] = required
        else:
            del node["required"]
    if "enum" in node and not (isinstance(node["enum"], list) and node["enum"]):
        del node["enum"]

    items = node.get("items")
    if isinstance(items, list):  # draft-07 tuple form
        node["prefixItems"] = node.pop("items")
        extra = node.pop("additionalItems", None)
        if isinstance(extra, Mapping | bool):
            node["items"] = extra
    else:
        node.pop("additionalItems", None)  # meaningless without tuple items

    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = node.get(exclusive)
        if isinstance(flag, bool):  # draft-04: a flag on minimum/maximum
            del node[exclusive]
            if flag and _is_number(node.get(bound)):
                node[exclusive] = node.pop(bound)

    dependencies = node.pop("dependencies", None)
    if isinstance(dependencies, Mapping):
        lists = {k: v for k, v in dependencies.items() if isinstance(v, list)}
        schemas = {k: v for k, v in dependencies.items() if isinstance(v, Mapping | bool)}
        if lists:
            node.setdefault("dependentRequired", lists)
        if schemas:
            node.setdefault("dependentSchemas", schemas)

    out = _map_subschemas(node, _normalise, path)
    if "allOf" in out:
        return _flatten_all_of(out, path)
    return out


def _allow_null(node: JsonSchema) -> None:
    kind = node.get("type")
    if isinstance(kind, str) and kind != "null":
        node["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        node["type"] = [*kind, "null"]
    if isinstance(node.get("enum"), list) and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]


def _flatten_all_of(node: Mapping[str, Any], path: str) -> Any:
    """``node`` with its ``allOf`` merged in; ``False`` when the branches contradict."""
    branches = node.get("allOf")
    out: Any = {k: v for k, v in node.items() if k != "allOf"}
    if not isinstance(branches, list):
        return out
    for i, branch in enumerate(branches):
        if isinstance(branch, Mapping) and "allOf" in branch:
            branch = _flatten_all_of(branch, f"{path}/allOf/{i}")
        out = _merge(out, branch, path)
    return out


_LOWER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_MAX_UNION_PRODUCT: Final = 16


def _merge(a: Any, b: Any, path: str) -> Any:
    """One schema meaning "both ``a`` and ``b``" (an ``allOf`` of two), exact for the keywords
    that combine (types intersect, bounds tighten, properties and required unite, unions
    multiply out while small); otherwise ``a``'s keyword stands, which only loosens."""
    if a is True or b is False:
        return copy.deepcopy(b)
    if b is True or a is False:
        return a
    if not isinstance(b, Mapping):
        return a
    if not isinstance(a, Mapping):
        return dict(b)
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
            continue
        mine = out[key]
        if key == "type":
            out[key] = _intersect_types(mine, value, path)
        elif key == "required" and isinstance(mine, list) and isinstance(value, list):
            out[key] = _unique([*mine, *value])
        elif key == "properties" and isinstance(mine, Mapping) and isinstance(value, Mapping):
            merged = dict(mine)
            for name, sub in value.items():
                merged[name] = _merge(merged[name], sub, path) if name in merged else sub
            out[key] = merged
        elif key in ("items", "additionalProperties", "propertyNames"):
            # (Not `contains`: "contains an A and contains a B" is not "contains an A-and-B".)
            out[key] = _merge(mine, value, f"{path}/{key}")
        elif key == "enum" and isinstance(mine, list) and isinstance(value, list):
            common = [v for v in mine if v in value]
            if not common:
                raise ToolSchemaError("allOf branches allow no common value", "", path)
            out[key] = common
        elif key == "const" and mine != value:
            raise ToolSchemaError("allOf branches require different constants", "", path)
        elif key in _LOWER_BOUNDS and _is_number(mine) and _is_number(value):
            out[key] = max(mine, value)
        elif key in _UPPER_BOUNDS and _is_number(mine) and _is_number(value):
            out[key] = min(mine, value)
        elif key in ("anyOf", "oneOf") and isinstance(mine, list) and isinstance(value, list):
            if len(mine) * len(value) <= _MAX_UNION_PRODUCT:
                out[key] = _union_product(mine, value, path)
        elif key == "allOf" and isinstance(mine, list) and isinstance(value, list):
            out[key] = [*mine, *value]
    return out


def _union_product(mine: list[Any], theirs: list[Any], path: str) -> list[Any]:
    """(A1 | A2) & (B1 | B2) as (A1 & B1) | (A1 & B2) | ..., without the impossible pairs."""
    combined: list[Any] = []
    for x in mine:
        for y in theirs:
            try:
                both = _merge(x, y, path)
            except ToolSchemaError:
                continue
            if both is not False:
                combined.append(both)
    if not combined:
        raise ToolSchemaError("allOf branches' unions have no common variant", "", path)
    return combined


def _type_set(kind: Any) -> list[str]:
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    return []


def _intersect_types(a: Any, b: Any, path: str) -> Any:
    mine, theirs = _type_set(a), _type_set(b)
    common: list[str] = []
    for kind in mine:
        if kind in theirs:
            common.append(kind)
        elif {kind, "integer"} <= {"number", "integer"} and {"number", "integer"} & set(theirs):
            common.append("integer")  # every integer is a number
    common = _unique(common)
    if not common:
        raise ToolSchemaError(f"allOf branches allow no common type ({a!r} and {b!r})", "", path)
    return common[0] if len(common) == 1 else common


def _object_root(schema: Any) -> JsonSchema:
    """The schema as one ``type: object`` without a top-level union, ``enum``, ``const``,
    ``not`` or conditional, which every provider rejects at the root. A root union of objects
    becomes one object with all their properties; a property is required only when every
    variant requires it. A conditional or ``not`` is dropped (looser)."""
    if schema is True:
        return _object_schema()
    if not isinstance(schema, Mapping):
        raise ToolSchemaError("the input schema accepts no input at all")
    root = dict(schema)
    for key in ("anyOf", "oneOf"):
        variants = root.pop(key, None)
        if isinstance(variants, list):
            root = _merge_object_variants(root, variants, f"/{key}")
    for key in ("not", "if", "then", "else", "enum", "const", "allOf"):
        root.pop(key, None)
    kinds = _type_set(root.get("type"))
    if kinds and "object" not in kinds:
        raise ToolSchemaError(f"the input schema must describe an object, not {kinds[0]!r}")
    root["type"] = "object"
    if "properties" not in root and not root.get("additionalProperties"):
        root["properties"] = {}
    return root


def _merge_object_variants(root: JsonSchema, variants: list[Any], path: str) -> JsonSchema:
    objects: list[JsonSchema] = []
    for i, variant in enumerate(variants):
        if variant is True:
            objects.append({})
        if not isinstance(variant, Mapping) or _is_null_schema(variant):
            continue  # never matches an arguments object
        variant = dict(variant)
        for key in ("anyOf", "oneOf"):
            nested = variant.pop(key, None)
            if isinstance(nested, list):
                variant = _merge_object_variants(variant, nested, f"{path}/{i}/{key}")
        kinds = _type_set(variant.get("type"))
        if kinds and "object" not in kinds:
            raise ToolSchemaError(
                f"the input schema is a union that includes {kinds[0]!r} values", "", f"{path}/{i}"
            )
        objects.append(variant)
    if not objects:
        return root
    candidates: dict[str, list[Any]] = {}
    for variant in objects:
        properties = variant.get("properties")
        for name, sub in properties.items() if isinstance(properties, Mapping) else ():
            seen = candidates.setdefault(name, [])
            if sub not in seen:
                seen.append(sub)
    merged = dict(root.get("properties") or {})
    for name, options in candidates.items():
        union = options[0] if len(options) == 1 else {"anyOf": options}
        merged[name] = _merge(merged[name], union, path) if name in merged else union
    if merged:
        root["properties"] = merged
    common = set(_string_list(objects[0].get("required")))
    for variant in objects[1:]:
        common &= set(_string_list(variant.get("required")))
    required = [*_string_list(root.get("required"))]
    for variant in objects:  # variant order, for a stable result
        required.extend(n for n in _string_list(variant.get("required")) if n in common)
    if required:
        root["required"] = _unique(required)
    return root


def _prepare(spec: ToolSpec) -> JsonSchema:
    schema = spec.input_schema
    if not isinstance(schema, Mapping):
        raise ToolSchemaError(
            f"the input schema must be a JSON object, got {type(schema).__name__}"
        )
    return _object_root(_normalise(inline_refs(schema), ""))


# --------------------------------------------------------------------------------------------
# Small helpers over schema nodes


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _string_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _is_null_schema(node: Any) -> bool:
    if not isinstance(node, Mapping):
        return False
    if node.get("type") == "null" or node.get("type") == ["null"]:
        return True
    return ("const" in node and node["const"] is None) or node.get("enum") == [None]


#: A union whose variants only say which properties must be present ("give a or b") constrains
#: the object around it; providers cannot say that, so such a union is dropped (looser).
_CONSTRAINT_ONLY: Final = frozenset(
    {
        "required",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "not",
        "if",
        "then",
        "else",
        "description",
        "title",
        "$comment",
    }
)


def _fold_union(node: Mapping[str, Any], variants: list[Any]) -> list[Any] | None:
    """The variants with the node's own structural keywords merged into each (a keyword next
    to ``anyOf`` applies to every variant), or None when the union only constrains which
    properties are present."""
    if variants and all(isinstance(v, Mapping) and set(v) <= _CONSTRAINT_ONLY for v in variants):
        return None
    shared = {
        k: v for k, v in node.items() if k not in _ANNOTATIONS and k not in ("anyOf", "oneOf")
    }
    if not shared:
        return list(variants)
    folded = [_merge(shared, v, "") if isinstance(v, Mapping | bool) else v for v in variants]
    return [v for v in folded if v is not False]


def _infer_types(node: Mapping[str, Any]) -> list[str]:
    """The type a schema without ``type`` evidently means, from its keywords."""
    keys = set(node)
    if keys & {"properties", "additionalProperties", "patternProperties", "required"}:
        return ["object"]
    if keys & {"minProperties", "maxProperties", "propertyNames"}:
        return ["object"]
    if keys & {"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"}:
        return ["array"]
    if keys & {"minLength", "maxLength", "pattern"}:
        return ["string"]
    if keys & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
        return ["number"]
    return []


def _value_types(values: Iterable[Any]) -> list[str]:
    kinds: list[str] = []
    for value in values:
        if value is None:
            kind = "null"
        elif isinstance(value, bool):
            kind = "boolean"
        elif isinstance(value, int):
            kind = "integer"
        elif isinstance(value, float):
            kind = "number"
        elif isinstance(value, str):
            kind = "string"
        elif isinstance(value, list):
            kind = "array"
        else:
            kind = "object"
        if kind not in kinds:
            kinds.append(kind)
    if "integer" in kinds and "number" in kinds:
        kinds.remove("integer")
    return kinds


def _accepts_null(node: Any) -> bool:
    """Whether ``null`` is valid against ``node`` (enough of JSON Schema for the shapes the
    compilers produce and pydantic emits)."""
    if node is True:
        return True
    if not isinstance(node, Mapping):
        return False
    if any(_accepts_null(v) for key in ("anyOf", "oneOf") for v in node.get(key) or ()):
        return True
    if isinstance(node.get("anyOf"), list) or isinstance(node.get("oneOf"), list):
        return False
    if "const" in node:
        return node["const"] is None
    if isinstance(node.get("enum"), list):
        return None in node["enum"]
    kind = node.get("type")
    if kind is None:
        return True
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def _hint(description: str | None, text: str) -> str:
    return f"{description.rstrip()} {text}" if description else text


def _describe_values(values: Sequence[Any]) -> str:
    shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in values[:50])
    more = ", ..." if len(values) > 50 else ""
    return f"Allowed values: {shown}{more}." if len(values) > 1 else f"Must be {shown}."


# --------------------------------------------------------------------------------------------
# OpenAI strict mode

_STRICT_FORMATS: Final = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_STRICT_KEYWORDS: Final[Mapping[str, tuple[str, ...]]] = {
    "string": ("pattern", "format"),
    "number": ("multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"),
    "integer": ("multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"),
    "array": ("minItems", "maxItems"),
}
STRICT_MAX_DEPTH: Final = 10
STRICT_MAX_PROPERTIES: Final = 5000
STRICT_MAX_ENUM_VALUES: Final = 1000


class _StrictConverter:
    """JSON Schema -> OpenAI's Structured Outputs subset, or ToolSchemaError."""

    def __init__(self) -> None:
        self.properties = 0
        self.enum_values = 0

    def convert(self, node: Any, path: str, depth: int) -> JsonSchema:
        if not isinstance(node, Mapping) or not node:
            raise ToolSchemaError(
                "a value of any type (an empty schema) has no strict-mode form", "", path
            )
        node = dict(node)
        out: JsonSchema = {
            k: node[k] for k in ("title", "description") if isinstance(node.get(k), str)
        }
        variants = node.get("anyOf") if isinstance(node.get("anyOf"), list) else node.get("oneOf")
        if isinstance(variants, list):
            folded = _fold_union(node, variants)
            if folded is not None:
                if not folded:
                    raise ToolSchemaError("a union with no satisfiable variant", "", path)
                converted = [
                    self.convert(v, f"{path}/anyOf/{i}", depth) for i, v in enumerate(folded)
                ]
                out["anyOf"] = _unique(converted)
                return out
            node = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}

        values: list[Any] | None = None
        if "const" in node:
            values = [node["const"]]
        elif isinstance(node.get("enum"), list):
            values = list(node["enum"])
        kinds = _type_set(node.get("type"))
        if values is not None:
            self.enum_values += len(values)
            if self.enum_values > STRICT_MAX_ENUM_VALUES:
                raise ToolSchemaError(
                    f"more than {STRICT_MAX_ENUM_VALUES} enum values in one schema", "", path
                )
            kinds = kinds or _value_types(values)
            if "const" in node:
                out["const"] = copy.deepcopy(node["const"])
            else:
                out["enum"] = copy.deepcopy(values)
        if not kinds:
            kinds = _infer_types(node)
        if not kinds:
            raise ToolSchemaError(
                "a value of any type (a schema without a type) has no strict-mode form", "", path
            )
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
        if "object" in kinds:
            out.update(self.object(node, path, depth + 1))
        if "array" in kinds:
            out["items"] = self.items(node, path, depth)
        for kind in kinds:
            for key in _STRICT_KEYWORDS.get(kind, ()):
                value = node.get(key)
                if value is None or (key == "format" and value not in _STRICT_FORMATS):
                    continue
                out[key] = copy.deepcopy(value)
        return out

    def object(self, node: Mapping[str, Any], path: str, depth: int) -> JsonSchema:
        if depth > STRICT_MAX_DEPTH:
            raise ToolSchemaError(f"objects nested more than {STRICT_MAX_DEPTH} deep", "", path)
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        if not isinstance(properties, Mapping) and extra is not False:
            raise ToolSchemaError("an object with free-form keys has no strict-mode form", "", path)
        properties = properties if isinstance(properties, Mapping) else {}
        self.properties += len(properties)
        if self.properties > STRICT_MAX_PROPERTIES:
            raise ToolSchemaError(f"more than {STRICT_MAX_PROPERTIES} properties", "", path)
        required = set(_string_list(node.get("required")))
        converted: JsonSchema = {}
        for name, sub in properties.items():
            if sub is False:
                continue  # a property that may not appear
            schema = self.convert(sub, f"{path}/properties/{_escape(name)}", depth)
            if name not in required and not _accepts_null(schema):
                # Strict mode requires every property; null stands for "left out".
                schema = _nullable(schema)
            converted[name] = schema
        return {"properties": converted, "required": list(converted), "additionalProperties": False}

    def items(self, node: Mapping[str, Any], path: str, depth: int) -> JsonSchema:
        items = node.get("items")
        prefix = node.get("prefixItems")
        options = [p for p in prefix if p is not False] if isinstance(prefix, list) else []
        if isinstance(items, Mapping | bool) and items is not False:
            options.append(items)
        if not options:
            options.append(items if isinstance(items, Mapping) else {})
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return self.convert(schema, f"{path}/items", depth)


def _nullable(schema: JsonSchema) -> JsonSchema:
    if isinstance(schema.get("anyOf"), list):
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    if "enum" not in schema and "const" not in schema and "type" in schema:
        return {**schema, "type": [*_type_set(schema["type"]), "null"]}
    # An enum or const is wrapped rather than extended, so `null` is valid however the
    # validator combines `type` and `enum`.
    described: JsonSchema = {k: schema[k] for k in ("title", "description") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in described}
    return {**described, "anyOf": [inner, {"type": "null"}]}


def strip_strict_nulls(spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` without the ``null`` values OpenAI strict mode put in for optional
    parameters the model left out.

    Strict mode makes every property required and optional ones nullable, so the model sends
    ``"limit": null`` where it means "use the default" — which a tool whose ``limit`` is an
    integer would reject. A ``null`` is removed (at any depth) where the tool's own schema
    neither requires the property nor accepts ``null`` for it; everything else is kept.
    """
    try:
        schema: Any = _prepare(spec)
    except ToolSchemaError:
        return dict(arguments)
    stripped = _strip_nulls(schema, dict(arguments))
    return stripped if isinstance(stripped, dict) else dict(arguments)


def _strip_nulls(schema: Any, value: Any) -> Any:
    if not isinstance(schema, Mapping):
        return value
    variants = [v for key in ("anyOf", "oneOf") for v in schema.get(key) or ()]
    if isinstance(value, dict):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            # Inside a union: the first object variant that declares every key given.
            for variant in variants:
                props = variant.get("properties") if isinstance(variant, Mapping) else None
                if isinstance(props, Mapping) and set(value) <= set(props):
                    return _strip_nulls(variant, value)
            return value
        required = set(_string_list(schema.get("required")))
        out: dict[str, Any] = {}
        for name, item in value.items():
            sub = properties.get(name)
            if item is None and sub is not None and name not in required and not _accepts_null(sub):
                continue
            out[name] = _strip_nulls(sub, item) if sub is not None else item
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, Mapping):
            items = next(
                (v.get("items") for v in variants if isinstance(v, Mapping) and "items" in v), None
            )
        if isinstance(items, Mapping):
            return [_strip_nulls(items, item) for item in value]
    return value


# --------------------------------------------------------------------------------------------
# Gemini

_GEMINI_TYPES: Final[Mapping[str, str]] = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
#: Where a conversion keeps text for the description until the schema is complete.
_HINTS: Final = "\x00hints"
_GEMINI_FORMATS: Final[Mapping[str, frozenset[str]]] = {
    "STRING": frozenset({"date-time", "enum"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}


class _GeminiConverter:
    """JSON Schema -> the OpenAPI subset of ``google.genai.types.Schema``.

    ``convert`` returns None for a value Gemini has no form for (a free-form object: an
    ``OBJECT`` must list properties); the caller decides — an optional property is left out,
    a union loses that variant, a required property or the only variant is an error.
    """

    def convert(self, node: Any, path: str) -> JsonSchema | None:
        if node is False:
            raise ToolSchemaError("a schema that accepts nothing has no Gemini form", "", path)
        if not isinstance(node, Mapping):
            node = {}
        node = dict(node)
        description = node.get("description") if isinstance(node.get("description"), str) else None
        nullable = False

        variants = node.get("anyOf") if isinstance(node.get("anyOf"), list) else node.get("oneOf")
        if isinstance(variants, list):
            present = [v for v in variants if not _is_null_schema(v)]
            nullable = len(present) < len(variants)
            folded = _fold_union(node, present)
            node = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
            if folded is not None:
                constants = _string_constants(folded)
                if constants is not None:
                    node = {"type": "string", "enum": constants}
                else:
                    return self.union(folded, path, description, nullable)

        kinds = _type_set(node.get("type"))
        if "null" in kinds:
            nullable = True
            kinds = [k for k in kinds if k != "null"]
            if not kinds and "const" not in node and "enum" not in node:
                # Only null is allowed: the nearest Gemini form is a nullable string.
                return _finish({"type": "STRING"}, description, True)

        values: list[Any] | None = None
        if "const" in node:
            values = [node["const"]]
        elif isinstance(node.get("enum"), list):
            values = list(node["enum"])
        if values is not None:
            if None in values:
                nullable = True
                values = [v for v in values if v is not None]
            return self.enum(values, path, description, nullable)

        if not kinds:
            # Untyped means "any JSON value"; a string is one, and Vertex wants a type.
            kinds = _infer_types(node) or ["string"]
        if len(kinds) > 1:
            split = [{**node, "type": kind} for kind in kinds]
            return self.union(split, path, description, nullable)
        result = self.typed(node, kinds[0], path)
        if result is None:
            return None
        return _finish(result, description, nullable)

    def union(
        self, variants: list[Any], path: str, description: str | None, nullable: bool
    ) -> JsonSchema | None:
        converted: list[JsonSchema] = []
        for i, variant in enumerate(variants):
            schema = self.convert(variant, f"{path}/anyOf/{i}")
            if schema is None:
                continue
            if schema.pop("nullable", False):
                nullable = True
            if schema not in converted:
                converted.append(schema)
        if not converted:
            return None
        result = converted[0] if len(converted) == 1 else {"anyOf": converted}
        return _finish(result, description, nullable)

    def enum(
        self, values: list[Any], path: str, description: str | None, nullable: bool
    ) -> JsonSchema | None:
        values = _unique(values)
        if not values:
            return _finish({"type": "STRING"}, description, True)
        groups: dict[str, list[Any]] = {}
        for value in values:
            kind = _value_types([value])[0]
            groups.setdefault(kind, []).append(value)
        parts: list[JsonSchema] = []
        for kind, members in groups.items():
            if kind == "string":
                parts.append({"type": "STRING", "enum": members})
            elif kind in _GEMINI_TYPES and kind not in ("object", "array"):
                # Gemini enums are strings only; the tool wants the real type, so the allowed
                # values go to the description instead.
                parts.append({"type": _GEMINI_TYPES[kind], _HINTS: [_describe_values(members)]})
            # Constant objects or arrays: no Gemini form (an OBJECT must declare properties).
        if not parts:
            return None
        result = parts[0] if len(parts) == 1 else {"anyOf": parts}
        return _finish(result, description, nullable)

    def typed(self, node: Mapping[str, Any], kind: str, path: str) -> JsonSchema | None:
        gemini_type = _GEMINI_TYPES[kind]
        out: JsonSchema = {"type": gemini_type}
        if kind == "object":
            properties = node.get("properties")
            required = _string_list(node.get("required"))
            converted: JsonSchema = {}
            for name, sub in properties.items() if isinstance(properties, Mapping) else ():
                if sub is False:
                    continue
                where = f"{path}/properties/{_escape(name)}"
                schema = self.convert(sub, where)
                if schema is None:
                    if name in required:
                        raise ToolSchemaError(
                            f"required property {name!r} has no Gemini form (a free-form object "
                            "or an enum of objects: Gemini objects must declare properties)",
                            "",
                            where,
                        )
                    continue  # the model cannot fill it; the tool uses its default
                converted[name] = schema
            if not converted:
                return None
            out["properties"] = converted
            kept = [name for name in _unique(required) if name in converted]
            if kept:
                out["required"] = kept
            _copy_counts(node, out, ("minProperties", "maxProperties"))
        elif kind == "array":
            items = node.get("items")
            prefix = node.get("prefixItems")
            options = [p for p in prefix if p is not False] if isinstance(prefix, list) else []
            if isinstance(items, Mapping) or items is True:
                options.append(items)
            if not options:
                options.append({})  # any items: see convert()
            schema = options[0] if len(options) == 1 else {"anyOf": options}
            converted_items = self.convert(schema, f"{path}/items")
            if converted_items is None:
                return None
            out["items"] = converted_items
            _copy_counts(node, out, ("minItems", "maxItems"))
        elif kind == "string":
            _copy_counts(node, out, ("minLength", "maxLength"))
            if isinstance(node.get("pattern"), str):
                out["pattern"] = node["pattern"]
        elif kind in ("integer", "number"):
            _copy_bounds(node, out, integer=kind == "integer")
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt:
            if fmt in _GEMINI_FORMATS.get(gemini_type, frozenset()):
                out["format"] = fmt
            elif kind in ("string", "integer", "number"):
                out[_HINTS] = [f"Format: {fmt}."]
        return out


def _finish(schema: JsonSchema, description: str | None, nullable: bool) -> JsonSchema:
    # The field's own description wins over the one of the variant it collapsed to (pydantic:
    # the field's text over the model's docstring); hints stay apart until _render_hints.
    if description:
        schema["description"] = description
    if nullable:
        schema["nullable"] = True
    return schema


def _render_hints(schema: Any) -> None:
    """Fold the constraints Gemini could not take (kept under _HINTS while converting) into the
    descriptions, so the model still reads them."""
    if not isinstance(schema, dict):
        return
    hints = schema.pop(_HINTS, None)
    if hints:
        schema["description"] = _hint(schema.get("description"), " ".join(hints))
    for sub in (schema.get("properties") or {}).values():
        _render_hints(sub)
    _render_hints(schema.get("items"))
    for sub in schema.get("anyOf") or ():
        _render_hints(sub)


def _string_constants(variants: list[Any]) -> list[str] | None:
    """The strings of a union of string constants (pydantic's ``Literal`` with descriptions,
    zod's ``z.union([z.literal(...)])``), or None."""
    constants: list[str] = []
    for variant in variants:
        if not isinstance(variant, Mapping):
            return None
        if isinstance(variant.get("const"), str):
            constants.append(variant["const"])
        elif isinstance(variant.get("enum"), list) and all(
            isinstance(v, str) for v in variant["enum"]
        ):
            constants.extend(variant["enum"])
        else:
            return None
    return _unique(constants) if constants else None


def _copy_counts(node: Mapping[str, Any], out: JsonSchema, keys: Sequence[str]) -> None:
    for key in keys:
        value = node.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[key] = value


def _copy_bounds(node: Mapping[str, Any], out: JsonSchema, *, integer: bool) -> None:
    lower = [node["minimum"]] if _is_number(node.get("minimum")) else []
    upper = [node["maximum"]] if _is_number(node.get("maximum")) else []
    # Gemini has no exclusive bounds: for integers the next integer is exact, for numbers the
    # bound itself is the nearest (slightly looser) form.
    if _is_number(node.get("exclusiveMinimum")):
        bound = node["exclusiveMinimum"]
        lower.append(math.floor(bound) + 1 if integer else bound)
    if _is_number(node.get("exclusiveMaximum")):
        bound = node["exclusiveMaximum"]
        upper.append(math.ceil(bound) - 1 if integer else bound)
    if lower:
        out["minimum"] = max(lower)
    if upper:
        out["maximum"] = min(upper)


# --------------------------------------------------------------------------------------------
# Per-provider compilers


def _description(spec: ToolSpec) -> str:
    return (spec.description or "").strip()


def compile_for_openai(
    spec: ToolSpec,
    name: str,
    *,
    strict: bool = False,
    max_description_length: int | None = OPENAI_DESCRIPTION_LIMIT,
) -> JsonSchema:
    """The Chat Completions tool ``{"type": "function", "function": {...}}`` for ``spec``.

    ``parameters`` is JSON Schema with references inlined and an object root. With ``strict``
    it is OpenAI's Structured Outputs subset and ``"strict": true`` is set; optional parameters
    become nullable, so pass the model's arguments through :func:`strip_strict_nulls`. A
    description longer than ``max_description_length`` is cut (OpenAI rejects it; None keeps it
    whole, for compatible servers without the limit).

    Raises :class:`ToolSchemaError` when the schema has no such form (in strict mode: a
    free-form object, an untyped value, the size limits), ValueError for an invalid ``name``.
    """
    _check_name(name, "openai")
    try:
        parameters = _prepare(spec)
        if strict:
            parameters = _StrictConverter().convert(parameters, "", 0)
    except ToolSchemaError as exc:
        raise exc.with_tool(spec.label) from None
    function: JsonSchema = {"name": name}
    description = _description(spec)
    if max_description_length is not None and len(description) > max_description_length:
        description = description[: max_description_length - 1].rstrip() + "…"
    if description:
        function["description"] = description
    function["parameters"] = parameters
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def compile_for_anthropic(spec: ToolSpec, name: str) -> JsonSchema:
    """The Messages API tool ``{"name", "description", "input_schema"}`` for ``spec``;
    ``input_schema`` is JSON Schema 2020-12 with an object root and references inlined.

    Raises :class:`ToolSchemaError` when the schema cannot describe an object, ValueError for
    an invalid ``name``."""
    _check_name(name, "anthropic")
    try:
        schema = _prepare(spec)
    except ToolSchemaError as exc:
        raise exc.with_tool(spec.label) from None
    tool: JsonSchema = {"name": name}
    description = _description(spec)
    if description:
        tool["description"] = description
    tool["input_schema"] = schema
    return tool


def compile_for_bedrock(spec: ToolSpec, name: str) -> JsonSchema:
    """The Converse ``toolConfig.tools`` entry ``{"toolSpec": {...}}`` for ``spec``; the
    schema goes in ``inputSchema.json``, an empty description is omitted (Bedrock requires at
    least one character when present).

    Raises :class:`ToolSchemaError` when the schema cannot describe an object, ValueError for
    an invalid ``name``."""
    _check_name(name, "bedrock")
    try:
        schema = _prepare(spec)
    except ToolSchemaError as exc:
        raise exc.with_tool(spec.label) from None
    tool_spec: JsonSchema = {"name": name}
    description = _description(spec)
    if description:
        tool_spec["description"] = description
    tool_spec["inputSchema"] = {"json": schema}
    return {"toolSpec": tool_spec}


def compile_for_gemini(spec: ToolSpec, name: str) -> JsonSchema:
    """One ``functionDeclarations`` entry ``{"name", "description", "parameters"}`` for
    ``spec``, ``parameters`` in the OpenAPI subset of ``google.genai.types.Schema`` (camelCase
    keys, upper-case types). An optional property Gemini cannot declare (a free-form object,
    an enum of objects) is left out; a tool with no parameters Gemini can declare has no
    ``parameters`` key.

    Raises :class:`ToolSchemaError` when such a property is required, and ValueError for an
    invalid ``name``."""
    _check_name(name, "gemini")
    try:
        parameters = _GeminiConverter().convert(_prepare(spec), "")
    except ToolSchemaError as exc:
        raise exc.with_tool(spec.label) from None
    declaration: JsonSchema = {"name": name}
    description = _description(spec)
    if description:
        declaration["description"] = description
    if parameters is not None:
        parameters.pop("nullable", None)
        _render_hints(parameters)
        declaration["parameters"] = parameters
    return declaration


# --------------------------------------------------------------------------------------------
# All tools of a request


@dataclass(frozen=True, slots=True)
class DroppedTool:
    """A tool left out of a request, and why."""

    spec: ToolSpec
    reason: str


@dataclass(frozen=True, slots=True)
class CompiledTools:
    """What :func:`compile_tools` produced: the provider's tool declarations (in the order of
    the specs), the names to route the model's calls back (only tools that were declared), and
    the tools that were dropped."""

    provider: Provider
    declarations: tuple[JsonSchema, ...]
    names: ToolNameMap
    dropped: tuple[DroppedTool, ...] = ()

    def __len__(self) -> int:
        return len(self.declarations)


def compile_tools(
    specs: Iterable[ToolSpec], provider: str, *, strict: bool = False
) -> CompiledTools:
    """Every tool of a request compiled for ``provider`` (one of :data:`PROVIDERS`).

    Names come from one :class:`ToolNameMap` over all ``specs``. A tool whose schema cannot be
    compiled is dropped with a warning on the ``chia_async.loop`` logger naming it and the
    reason — one bad tool never sinks the request; so is a second spec with the same server and
    name. ``strict`` asks OpenAI's strict mode; a tool strict mode cannot express is sent
    non-strict, with a warning. Other providers ignore ``strict``.

    Raises ValueError for an unknown ``provider``.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    kind: Provider = provider  # narrowed by the membership test above
    unique: list[ToolSpec] = []
    dropped: list[DroppedTool] = []
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        if spec.key in seen:
            logger.warning("tool %s is listed twice; keeping the first", spec.label)
            dropped.append(DroppedTool(spec, "duplicate server and tool name"))
            continue
        seen.add(spec.key)
        unique.append(spec)

    all_names = ToolNameMap(unique)
    declarations: list[JsonSchema] = []
    declared: list[tuple[str, str]] = []
    for spec in unique:
        name = all_names.provider_name(*spec.key)
        try:
            declarations.append(_compile_one(spec, name, kind, strict))
        except ToolSchemaError as exc:
            reason = f"{exc.reason} (at #{exc.path})"
            logger.warning("tool %s dropped: no %s form: %s", spec.label, kind, reason)
            dropped.append(DroppedTool(spec, reason))
            continue
        except Exception as exc:
            # A malformed schema the compiler did not foresee: still one tool, not the request.
            reason = f"unexpected {type(exc).__name__}: {exc}"
            logger.warning("tool %s dropped: %s", spec.label, reason, exc_info=exc)
            dropped.append(DroppedTool(spec, reason))
            continue
        declared.append(spec.key)
    return CompiledTools(kind, tuple(declarations), all_names.restrict(declared), tuple(dropped))


def _compile_one(spec: ToolSpec, name: str, provider: Provider, strict: bool) -> JsonSchema:
    try:
        if provider == "openai":
            if strict:
                try:
                    return compile_for_openai(spec, name, strict=True)
                except ToolSchemaError as exc:
                    logger.warning(
                        "tool %s sent without strict mode: %s (at #%s)",
                        spec.label,
                        exc.reason,
                        exc.path,
                    )
            return compile_for_openai(spec, name)
        if provider == "anthropic":
            return compile_for_anthropic(spec, name)
        if provider == "bedrock":
            return compile_for_bedrock(spec, name)
        return compile_for_gemini(spec, name)
    except RecursionError:
        raise ToolSchemaError("schema is nested too deeply", spec.label) from None
