"""Tools from plain Python functions: the schema from the signature, or given explicitly.

`function_tool(fn)` reads the parameters' type hints: str, int, float, bool, None, list[X],
tuple[X, ...], dict[str, X], Literal[...], X | None, and `Any` (no constraint); a parameter with
a default is optional. The description is the docstring's first paragraph; a Google-style
"Args:" section gives each parameter's description. A hint outside that list is refused with
a message saying to pass `parameters=` (a JSON object schema) instead.
`import_tool("pkg.module:function")` does the same for an import path (ToolsOptions).
The function is called with the arguments as keywords; what it returns becomes the observation
(a str as it is, anything else as JSON). Left out: how it runs and is timed out (runtime.py).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from selfcritic.tools.base import Tool, ToolResult, check_tool

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def function_tool(
    fn: Callable[..., Any],
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    source: str | None = None,
) -> Tool:
    """A Tool that calls `fn(**arguments)`; its schema from the signature unless given."""
    name = name or fn.__name__
    source = source or f"python:{getattr(fn, '__module__', '?')}:{fn.__qualname__}"
    doc = inspect.getdoc(fn) or ""
    if parameters is None:
        parameters = signature_schema(fn, _argument_docs(doc), f"tool {name!r} ({source})")
    tool = Tool(
        name=name,
        description=description if description is not None else _summary(doc),
        parameters=parameters,
        run=lambda arguments: _observation(fn(**arguments)),
        timeout_s=timeout_s,
        source=source,
    )
    check_tool(tool)
    return tool


def import_tool(path: str) -> Tool:
    """The function at "pkg.module:function" as a Tool; ValueError saying what is missing."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"python function {path!r}: write it as 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        message = f"python function {path!r}: cannot import {module_name!r}: {error}"
        raise ValueError(message) from None
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise ValueError(f"python function {path!r}: {module_name} has no function {attribute!r}")
    return function_tool(fn, source=f"python:{path}")


def signature_schema(fn: Callable[..., Any], docs: dict[str, str], where: str) -> dict[str, Any]:
    """The JSON object schema of `fn`'s keyword-callable parameters."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as error:  # a hint naming what its module cannot see
        message = f"{where}: its type hints do not resolve ({error}); pass parameters="
        raise ValueError(message) from None
    properties, required = {}, []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ValueError(f"{where}: parameter {parameter.name!r} is positional-only")
        hint = hints.get(parameter.name, Any)
        try:
            schema = type_schema(hint)
        except TypeError as error:
            raise ValueError(
                f"{where}: parameter {parameter.name!r}: {error}; pass parameters= "
                "(a JSON object schema) to function_tool instead"
            ) from None
        if parameter.name in docs:
            schema["description"] = docs[parameter.name]
        properties[parameter.name] = schema
        if parameter.default is parameter.empty:
            required.append(parameter.name)
    return {"type": "object", "properties": properties, "required": required}


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of one type hint; TypeError for a hint it cannot say."""
    if hint is Any:
        return {}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(arguments)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(argument) for argument in arguments]}
    if origin is list or (origin is tuple and len(arguments) == 2 and arguments[1] is ...):
        return {"type": "array", "items": type_schema(arguments[0]) if arguments else {}}
    if origin is dict or hint is dict:
        if not arguments:
            return {"type": "object"}
        if arguments[0] is not str:
            raise TypeError(f"a JSON object's keys are strings, not {arguments[0]!r}")
        return {"type": "object", "additionalProperties": type_schema(arguments[1])}
    if hint is list:
        return {"type": "array"}
    raise TypeError(f"no JSON schema for the type hint {hint!r}")


def _observation(value: Any) -> str | ToolResult:
    if isinstance(value, str | ToolResult):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _summary(doc: str) -> str:
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _argument_docs(doc: str) -> dict[str, str]:
    """{parameter: description} from a Google-style "Args:" section."""
    match = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", doc, re.MULTILINE)
    if not match:
        return {}
    found = {}
    for line in match.group(1).splitlines():
        entry = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line)
        if entry:
            found[entry.group(1)] = entry.group(2).strip()
    return found
