"""Synthetic tools from a YAML file: a schema and a simulated, deterministic result each, for
scale (after Kimi K2's pipeline of tens of thousands of synthetic tools; no real service runs).

The file:

    seed: 0                      # optional; mixed into every generated value
    tools:
      - name: get_weather
        description: Current weather of a city.
        parameters:              # JSON object schema of the arguments
          type: object
          properties: {city: {type: string}, unit: {type: string, enum: [c, f]}}
          required: [city]
        result:                  # optional; all of its keys are optional
          key: [city]            # the arguments that pick a row and seed values (default: all)
          table:                 # rows by key value (several key arguments: joined with "|")
            Paris: {temperature: 18, sky: cloudy}
          generate:              # values for a key not in the table
            temperature: {int: [-10, 35]}      # an integer in [lo, hi]
            sky: {choice: [sunny, cloudy]}     # one of a list
            # also {float: [lo, hi], digits: 2} and {hex: n} (n hex digits, an id)
          missing: "No weather data for {city}."   # the text for a key in neither
          template: "{city}: {temperature} degrees, {sky}"  # over arguments and values

The result is `template` filled with the arguments and the row's (or generated) values; without
a template, the values as JSON. Generated value of field F (documented so that tests and users
can work it out): u = the first 8 bytes, big-endian, of sha256 of
"{seed}\\0{tool name}\\0{F}\\0{K}" with K the key arguments as JSON (keys sorted, separators
"," and ":", non-ASCII kept); int: lo + u % (hi - lo + 1); float: round(lo + (hi - lo) * u /
2**64, digits); choice: items[u % len(items)]; hex: sha256's hex digest, first n characters.
Nothing depends on Python's hash seed or on earlier calls. Left out: simulated failures and
state across calls.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any

import yaml

from selfcritic.tools.base import Tool, check_tool

_RESULT_KEYS = {"key", "table", "generate", "missing", "template"}
_GENERATORS = {"int", "float", "choice", "hex"}


def load_synthetic(path: str) -> list[Tool]:
    """The tools of a synthetic YAML file; ValueError naming the file and key at fault."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"synthetic tools file {path!r} cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"synthetic tools file {path!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        raise ValueError(f"{path}: expected a mapping with a `tools` list at the top")
    seed = data.get("seed", 0)
    tools, names = [], set()
    for index, spec in enumerate(data["tools"]):
        where = f"{path}: tools[{index}]"
        tool = _tool(spec, seed, where)
        if tool.name in names:
            raise ValueError(f"{where}: the name {tool.name!r} is used twice")
        names.add(tool.name)
        tools.append(tool)
    return tools


def generated_value(seed: Any, tool: str, field: str, key: dict[str, Any], spec: dict) -> Any:
    """One generated value (the formula in the module docstring)."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{seed}\0{tool}\0{field}\0{canonical}".encode()).digest()
    u = int.from_bytes(digest[:8], "big")
    if "int" in spec:
        low, high = spec["int"]
        return low + u % (high - low + 1)
    if "float" in spec:
        low, high = spec["float"]
        return round(low + (high - low) * u / 2**64, spec.get("digits", 2))
    if "choice" in spec:
        return spec["choice"][u % len(spec["choice"])]
    return digest.hex()[: spec["hex"]]


def _tool(spec: Any, seed: Any, where: str) -> Tool:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping with name, description, parameters")
    for needed in ("name", "description", "parameters"):
        if needed not in spec:
            raise ValueError(f"{where}: `{needed}` is missing")
    name = spec["name"]
    result = spec.get("result") or {}
    where = f"{where} ({name})"
    tool = Tool(name, str(spec["description"]), spec["parameters"], source=where)
    check_tool(tool)
    _check_result(result, tool.parameters, f"{where}.result")
    return Tool(
        name=name,
        description=tool.description,
        parameters=tool.parameters,
        run=lambda arguments: _simulate(seed, name, result, arguments),
        source=f"synthetic:{where}",
    )


def _simulate(seed: Any, name: str, result: dict, arguments: dict[str, Any]) -> str:
    key_names = result.get("key") or sorted(arguments)
    key = {k: arguments[k] for k in key_names if k in arguments}
    row = _rows(result.get("table") or {}).get(_row_key(key_names, arguments))
    generate = result.get("generate") or {}
    if row is not None:
        values = dict(row)
    elif generate:
        values = {f: generated_value(seed, name, f, key, s) for f, s in generate.items()}
    elif "missing" in result:
        return _fill(result["missing"], arguments)
    else:
        values = {}
    if "template" in result:
        return _fill(result["template"], {**arguments, **values})
    return json.dumps(values, ensure_ascii=False, sort_keys=True)


def _row_key(key_names: list[str], arguments: dict[str, Any]) -> str:
    parts = [arguments.get(k) for k in key_names]
    return "|".join(p if isinstance(p, str) else json.dumps(p) for p in parts)


def _rows(table: dict) -> dict[str, dict]:
    return {str(k): v for k, v in table.items()}


class _Blank(dict):
    def __missing__(self, key: str) -> str:  # an optional argument left out
        return ""


def _fill(template: str, values: dict[str, Any]) -> str:
    return template.format_map(_Blank(values))


def _check_result(result: Any, parameters: dict, where: str) -> None:
    if not isinstance(result, dict):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(result) - _RESULT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_RESULT_KEYS)}")
    properties = set(parameters.get("properties") or {})
    for key_name in result.get("key") or []:
        if key_name not in properties:
            raise ValueError(f"{where}.key: {key_name!r} is not an argument of the tool")
    table = result.get("table") or {}
    if not isinstance(table, dict) or not all(isinstance(r, dict) for r in table.values()):
        raise ValueError(f"{where}.table: expected a mapping of key -> mapping of values")
    generate = result.get("generate") or {}
    if not isinstance(generate, dict):
        raise ValueError(f"{where}.generate: expected a mapping of field -> generator")
    for field, spec in generate.items():
        _check_generator(spec, f"{where}.generate.{field}")
    columns = set(generate)
    for row in table.values():
        columns |= set(row)
    for text_key, known in (("template", properties | columns), ("missing", properties)):
        if text_key in result:
            _check_template(result[text_key], known, f"{where}.{text_key}")


def _check_generator(spec: Any, where: str) -> None:
    kinds = set(spec) & _GENERATORS if isinstance(spec, dict) else set()
    if len(kinds) != 1:
        raise ValueError(f"{where}: expected exactly one of {sorted(_GENERATORS)}, got {spec!r}")
    (kind,) = kinds
    value = spec[kind]
    if kind in ("int", "float"):
        if not (isinstance(value, list) and len(value) == 2 and value[0] <= value[1]):
            raise ValueError(f"{where}.{kind}: expected [low, high] with low <= high")
    elif kind == "choice" and not (isinstance(value, list) and value):
        raise ValueError(f"{where}.choice: expected a non-empty list")
    elif kind == "hex" and not (isinstance(value, int) and 1 <= value <= 64):
        raise ValueError(f"{where}.hex: expected a number of hex digits in [1, 64]")


def _check_template(template: Any, known: set[str], where: str) -> None:
    if not isinstance(template, str):
        raise ValueError(f"{where}: expected a string")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as error:
        message = f"{where}: not a format string ({error}); write a literal brace as {{{{"
        raise ValueError(message) from None
    for field in fields:
        if field not in known:
            raise ValueError(
                f"{where}: {{{field}}} is neither an argument nor a value; known: {sorted(known)}"
            )
