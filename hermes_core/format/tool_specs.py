"""Turns Python functions, pydantic models, TypedDicts and OpenAI-style dicts into OpenAI tool specs.

Every spec has the form ``{"type": "function", "function": {"name", "description", "parameters"}}``
where ``parameters`` is an object JSON schema built by pydantic (never by a hand-written type mapper).

Schema decisions (documented in docs too):
- ``$ref``s into ``$defs`` are inlined so the prompt shows each tool self-contained; a recursive model
  (which cannot be inlined) keeps its ``$defs`` (the prompt and xgrammar both accept them).
- pydantic's generated ``title`` keys are removed (they repeat the property name and cost tokens).
- A parameter with a default is optional (not in ``required``); its JSON-serialisable default is
  recorded as ``"default"``. ``Optional[X]`` is rendered as pydantic does: ``anyOf [X, null]``.
Adapters convert LangChain/LlamaIndex tools to OpenAI dicts first; this module knows no framework.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import typing
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from typing_extensions import is_typeddict

from hermes_core.errors import ToolSpecError
from hermes_core.format._docstrings import parse_docstring

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DATA_KEYS = {"default", "enum", "const", "examples", "example"}
_MAP_KEYS = {"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"}


def to_tool_spec(obj: Any) -> dict[str, Any]:
    """Return the OpenAI-style tool spec for a function, pydantic model class, TypedDict or spec dict."""
    if isinstance(obj, dict):
        return _from_dict(obj)
    try:
        return copy.deepcopy(_cached_spec(obj))
    except TypeError as exc:  # unhashable (e.g. a method of an unhashable object): build it uncached
        if "unhashable" not in str(exc):
            raise
        return _build_spec(obj)


@lru_cache(maxsize=256)
def _cached_spec(obj: Any) -> dict[str, Any]:
    """Specs of functions and classes, cached: building one creates a pydantic model (milliseconds)."""
    return _build_spec(obj)


def _build_spec(obj: Any) -> dict[str, Any]:
    """Dispatch on the kind of tool object."""
    from pydantic import BaseModel

    if isinstance(obj, type) and issubclass(obj, BaseModel):
        return _from_model(obj)
    if isinstance(obj, type) and is_typeddict(obj):
        return _from_typeddict(obj)
    if isinstance(obj, type):
        raise ToolSpecError(
            f"Cannot make a tool from class {obj.__name__!r}: pass a function, a pydantic BaseModel class, "
            "a TypedDict or an OpenAI tool dict."
        )
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return _from_function(obj)
    raise ToolSpecError(
        f"Cannot make a tool from {type(obj).__name__} object {obj!r:.80}: pass a function, a pydantic "
        "BaseModel class, a TypedDict or an OpenAI tool dict (LangChain/LlamaIndex tools: use the adapter)."
    )


def to_tool_specs(tools: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Convert every tool with ``to_tool_spec`` and check that the names are unique."""
    specs = [to_tool_spec(tool) for tool in (tools or [])]
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        name = spec["function"]["name"]
        if name in seen:
            raise ToolSpecError(
                f"Duplicate tool name {name!r} (tools #{seen[name]} and #{index}); give each tool a unique name."
            )
        seen[name] = index
    return specs


def tool_name(spec: dict[str, Any]) -> str:
    """The name of an OpenAI-style tool spec."""
    return spec["function"]["name"]


def _check_name(name: Any, what: str) -> str:
    """Raise unless ``name`` fits OpenAI's tool-name rule."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ToolSpecError(
            f"Invalid tool name {name!r} for {what}: names must match ^[a-zA-Z0-9_-]{{1,64}}$; rename it."
        )
    return name


def _spec(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Assemble the OpenAI-style spec dict (key order: name, description, parameters)."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def _from_dict(obj: dict[str, Any]) -> dict[str, Any]:
    """Validate an OpenAI-style spec (nested or flat ``{"name", ...}``) and return it wrapped, copied."""
    if obj.get("type") == "function" and isinstance(obj.get("function"), dict):
        inner = obj["function"]
    elif "name" in obj and "function" not in obj:
        inner = obj
    else:
        raise ToolSpecError(
            f"Tool dict {str(obj)[:80]!r} is not an OpenAI tool: use "
            "{'type': 'function', 'function': {'name', 'description', 'parameters'}} or the flat "
            "{'name', 'description', 'parameters'} form."
        )
    name = _check_name(inner.get("name"), "a tool dict")
    description = inner.get("description") or ""
    if not isinstance(description, str):
        raise ToolSpecError(f"Tool {name!r}: description must be a string, got {type(description).__name__}.")
    parameters = inner.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    _check_parameters(name, parameters)
    return _spec(name, description, copy.deepcopy(parameters))


def _check_parameters(name: str, parameters: Any) -> None:
    """Raise unless ``parameters`` is a valid JSON schema describing an object."""
    if not isinstance(parameters, dict):
        raise ToolSpecError(
            f"Tool {name!r}: parameters must be a JSON schema dict, got {type(parameters).__name__}."
        )
    try:
        canonical = json.dumps(parameters, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ToolSpecError(
            f"Tool {name!r}: parameters is not JSON-serialisable ({exc}); use plain JSON values."
        ) from None
    problem = _schema_problem(canonical)
    if problem:
        raise ToolSpecError(f"Tool {name!r}: {problem}")
    if parameters.get("type") != "object":
        raise ToolSpecError(
            f"Tool {name!r}: parameters must be an object schema ({{'type': 'object', 'properties': ...}}), "
            f"got type {parameters.get('type')!r}."
        )


@lru_cache(maxsize=512)
def _schema_problem(schema_json: str) -> str | None:
    """Meta-schema check of a schema (cached by its canonical JSON: specs are re-checked on every request)."""
    import jsonschema

    schema = json.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"parameters is not a valid JSON schema at {where}: {exc.message}; fix the schema."
    return None


def _own_doc(cls: type) -> str | None:
    """The class's own docstring (not one inherited from BaseModel/dict)."""
    return cls.__dict__.get("__doc__")


def _from_model(model: Any) -> dict[str, Any]:
    """Spec for a pydantic model class: class name, docstring summary, its JSON schema."""
    name = _check_name(model.__name__, f"pydantic model {model.__qualname__}")
    return _spec(name, parse_docstring(_own_doc(model)).summary, model_parameters(model))


def model_parameters(model: Any) -> dict[str, Any]:
    """The arguments schema of a pydantic model class as a tool spec holds it (recursion kept in ``$defs``).

    For adapters whose tools carry an arguments model under their own name (LangChain ``BaseTool``,
    LlamaIndex ``ToolMetadata.fn_schema``), so their schemas are built exactly as the core builds one.
    """
    try:
        schema = model.model_json_schema()
    except Exception as exc:
        raise ToolSpecError(
            f"Cannot build a JSON schema for pydantic model {model.__name__!r}: {_first_line(exc)}; use "
            "JSON-compatible field types."
        ) from None
    return _finish(schema, parse_docstring(_own_doc(model)).args)


def to_json_schema(obj: Any) -> dict[str, Any]:
    """The JSON-mode schema of a pydantic model class or TypedDict: its tool spec's parameters, titled.

    Same conversion as ``to_tool_spec`` (``$defs``/``$ref`` kept for recursive models), with the
    class name as ``title`` and its docstring summary as ``description``; a dict is returned as given.
    """
    if isinstance(obj, dict):
        return obj
    function = to_tool_spec(obj)["function"]
    head = {"title": function["name"]}
    if function["description"]:
        head["description"] = function["description"]
    return {**head, **function["parameters"]}


def _from_typeddict(td: type) -> dict[str, Any]:
    """Spec for a TypedDict: class name, docstring summary, a schema of its keys (optional keys not required).

    Built from the annotations (not ``TypeAdapter(td)``) so ``typing.TypedDict`` works before Python 3.12.
    """
    from pydantic import Field

    name = _check_name(td.__name__, f"TypedDict {td.__qualname__}")
    doc = parse_docstring(_own_doc(td))
    hints = _type_hints(td, f"TypedDict {name!r}")
    required = set(getattr(td, "__required_keys__", hints))
    for key, annotation in hints.items():  # string annotations hide NotRequired from __required_keys__
        marker = getattr(typing.get_origin(annotation), "_name", None)
        if marker == "NotRequired":
            required.discard(key)
        elif marker == "Required":
            required.add(key)
    fields: dict[str, Any] = {}
    for index, (key, annotation) in enumerate(hints.items()):
        text = _annotated_text(_unwrap_required(annotation))
        fields[f"p{index}"] = (
            _unwrap_required(annotation),
            Field(... if key in required else None, alias=key, **({"description": text} if text else {})),
        )
    schema = _model_schema(name, fields, f"TypedDict {name!r}")
    for key in hints:
        if key not in required:
            schema["properties"][key].pop("default", None)
    return _spec(name, doc.summary, _finish(schema, doc.args))


def _unwrap_required(annotation: Any) -> Any:
    """``Required[X]`` / ``NotRequired[X]`` -> ``X`` (requiredness comes from ``__required_keys__``)."""
    origin = typing.get_origin(annotation)
    if getattr(origin, "_name", None) in ("Required", "NotRequired"):
        return typing.get_args(annotation)[0]
    return annotation


def _model_schema(name: str, fields: dict[str, Any], what: str) -> dict[str, Any]:
    """JSON schema of a throwaway pydantic model with aliased ``fields``; errors name ``what``."""
    from pydantic import create_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(f"{name}_arguments", **fields)
            return model.model_json_schema(by_alias=True)
    except Exception as exc:
        raise ToolSpecError(
            f"Cannot build a JSON schema for {what}: {_first_line(exc)}; use JSON-compatible type hints."
        ) from None


def _from_function(fn: Callable[..., Any]) -> dict[str, Any]:
    """Spec for a function: its name, docstring summary and a schema of its typed parameters."""
    from pydantic import Field, TypeAdapter

    fname = getattr(fn, "__name__", repr(fn))
    name = _check_name(fname, f"function {fname}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise ToolSpecError(
            f"Cannot read the signature of {fname!r}; wrap it in a def with typed parameters."
        ) from None
    hints = _type_hints(fn, repr(fname))
    doc = parse_docstring(inspect.getdoc(fn))
    fields: dict[str, Any] = {}
    for index, (pname, param) in enumerate(signature.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolSpecError(
                f"Function {fname!r} takes {'*' if param.kind is param.VAR_POSITIONAL else '**'}{pname}, which a "
                "tool cannot describe; give it explicit, typed parameters instead."
            )
        if pname not in hints:
            raise ToolSpecError(
                f"Parameter {pname!r} of function {fname!r} has no type hint; annotate it (e.g. {pname}: str)."
            )
        annotation = hints[pname]
        try:
            TypeAdapter(annotation).json_schema()
        except Exception as exc:
            raise ToolSpecError(
                f"Parameter {pname!r} of function {fname!r} has type {annotation!r} that has no JSON schema "
                f"({_first_line(exc)}); use str/int/float/bool, list, dict, Literal, Enum or a pydantic model."
            ) from None
        default = ... if param.default is param.empty else param.default
        text = (
            None
            if _has_explicit_description(annotation)
            else _annotated_text(annotation) or doc.args.get(pname)
        )
        extra = {"description": text} if text else {}
        fields[f"p{index}"] = (annotation, Field(default, alias=pname, **extra))
    schema = _model_schema(name, fields, f"function {fname!r}")
    schema.pop("description", None)
    return _spec(name, doc.summary, _finish(schema, {}))


def _has_explicit_description(annotation: Any) -> bool:
    """Whether ``Annotated[..., Field(description=...)]`` already describes the parameter (it wins)."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(getattr(meta, "description", None) for meta in typing.get_args(annotation)[1:])


def _annotated_text(annotation: Any) -> str | None:
    """A plain string in ``Annotated[X, ..., "text"]``: the parameter's description (LangChain's spelling)."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    texts = [meta for meta in typing.get_args(annotation)[1:] if isinstance(meta, str) and meta.strip()]
    return texts[-1].strip() if texts else None


def _type_hints(obj: Any, what: str) -> dict[str, Any]:
    """``obj``'s type hints, ``Annotated`` kept; a ``ToolSpecError`` naming ``what`` if one cannot be resolved."""
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception as exc:
        raise ToolSpecError(
            f"Cannot resolve the type hints of {what} ({_first_line(exc)}); import the hinted types at module level."
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message, for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _finish(schema: dict[str, Any], arg_docs: dict[str, str]) -> dict[str, Any]:
    """Inline ``$defs`` when possible, drop titles, add docstring descriptions; return an object schema."""
    schema = _inline_refs(schema)
    schema = _strip_titles(schema)
    schema.pop("description", None)
    properties = schema.setdefault("properties", {})
    for pname, text in arg_docs.items():
        prop = properties.get(pname)
        if isinstance(prop, dict) and text and "description" not in prop:
            prop["description"] = text
    ordered: dict[str, Any] = {"type": "object"}
    ordered.update((k, v) for k, v in schema.items() if k != "type")
    if not ordered.get("required"):
        ordered.pop("required", None)
    return ordered


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local ``#/$defs/X`` references by their definitions, except where X recurses.

    A definition that refers back to itself (a tree node) cannot be inlined: its references stay
    ``$ref``s into a ``$defs`` holding only such definitions. A root that is just a reference to one
    is unrolled once, so the top level still lists the properties.
    """
    defs = schema.get("$defs") or {}
    if not defs:
        return schema
    cyclic = {key for key in defs if _reaches(defs, key, key)}

    def target(node: dict[str, Any]) -> str | None:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/") :] in defs:
            return ref[len("#/$defs/") :]
        return None

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        key = target(node)
        if key is not None and key not in cyclic:
            siblings = {k: resolve(v) for k, v in node.items() if k != "$ref"}
            return {**resolve(defs[key]), **siblings}
        return {k: (v if k in _DATA_KEYS else resolve(v)) for k, v in node.items() if k != "$defs"}

    body = resolve(schema)
    root = target(body)
    if root is not None:  # the whole schema is one recursive definition: show its properties at the top
        body = {**resolve(defs[root]), **{k: v for k, v in body.items() if k != "$ref"}}
    kept = {key: resolve(defs[key]) for key in sorted(cyclic) if _mentions(body, key) or key == root}
    pending = list(kept)
    while pending:  # definitions only reachable through another kept one
        holder = kept[pending.pop()]
        for key in sorted(k for k in cyclic - kept.keys() if _mentions(holder, k)):
            kept[key] = resolve(defs[key])
            pending.append(key)
    if kept:
        body["$defs"] = kept
    return body


def _reaches(defs: dict[str, Any], start: str, goal: str) -> bool:
    """Whether definition ``start`` refers, directly or through other definitions, to ``goal``."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        key = pending.pop()
        for ref in _refs_in(defs.get(key)):
            if ref == goal:
                return True
            if ref not in seen:
                seen.add(ref)
                pending.append(ref)
    return False


def _refs_in(node: Any) -> set[str]:
    """Names of the ``#/$defs/...`` definitions ``node`` refers to directly."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                found.add(ref[len("#/$defs/") :])
            stack.extend(v for k, v in item.items() if k not in _DATA_KEYS)
    return found


def _mentions(node: Any, key: str) -> bool:
    return key in _refs_in(node)


def _strip_titles(node: Any) -> Any:
    """Drop pydantic's string ``title`` annotations everywhere in a schema (never property names)."""
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _DATA_KEYS:
            out[key] = value
        elif key in _MAP_KEYS and isinstance(value, dict):
            out[key] = {k: _strip_titles(v) for k, v in value.items()}
        else:
            out[key] = _strip_titles(value)
    return out
