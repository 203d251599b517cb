"""The sandbox's plain-data codec (rewards/sandbox_files/plain.py): what may cross, exactly."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "rewards" / "sandbox_files" / "plain.py"
_SPEC = importlib.util.spec_from_file_location("sandbox_plain", _PATH)
plain = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(plain)


def crossed(value):
    """`value` sent as a line and read back, as the pipe carries it."""
    return plain.decode(plain.loads(plain.dumps({"value": plain.encode(value)}))["value"])


def test_plain_values_cross_as_themselves():
    value = [
        None, True, 0, -(10**40), 1.5, -0.0, "tab\t é \n",
        (1, (2,)), {3, "x"}, frozenset({(1, 2)}), b"\x00\xff",
        {"a": [1], 2: {"nested": (None,)}, (1, "k"): frozenset()},
    ]  # fmt: skip
    back = crossed(value)
    assert back == value
    assert [type(v) for v in back] == [type(v) for v in value]
    assert math.copysign(1, back[5]) == -1.0  # -0.0 keeps its sign
    assert math.isnan(crossed(float("nan"))) and crossed(float("-inf")) == float("-inf")
    assert plain.encode((1, [2])) == {"t": [1, {"l": [2]}]}  # the wire format, by hand


@pytest.mark.parametrize(
    "value, named",
    [
        (type("Sub", (int,), {})(3), "Sub"),
        (type("Str", (str,), {})("s"), "Str"),
        (lambda: 1, "function"),
        ((i for i in []), "generator"),
        (object(), "object"),
        (bytearray(b"x"), "bytearray"),
        ([1, {2: range(3)}], "range"),
    ],
)
def test_what_is_not_plain_is_refused_by_name(value, named):
    with pytest.raises(plain.NotPlain, match=named):
        plain.encode(value)


def test_nesting_is_bounded():
    looped = []
    looped.append(looped)
    with pytest.raises(plain.NotPlain, match="deeper"):
        plain.encode(looped)
    deep = 1
    for _ in range(plain.MAX_DEPTH + 1):
        deep = {"l": [deep]}
    with pytest.raises(plain.NotPlain, match="deeper"):
        plain.decode(deep)


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],  # a bare JSON list: containers must be tagged
        {"l": [1], "t": [2]},  # two tags
        {"x": []},  # an unknown tag
        {"s": [{"l": [1]}]},  # a set holding a list
        {"d": [[{"l": []}, 1]]},  # an unhashable key
        {"d": [[1]]},  # a dict item that is not a pair
        {"b": "zz"},  # bytes that are not hex
        {"l": 5},  # a tag without a list
    ],
)
def test_malformed_data_is_refused(data):
    with pytest.raises(plain.NotPlain):
        plain.decode(json.loads(json.dumps(data)))


def test_a_message_must_be_a_json_object():
    assert plain.loads(b'{"ready": true}\n') == {"ready": True}
    for line in (b"[1]\n", b"not json\n", b"[" * 100_000 + b"\n"):
        with pytest.raises(plain.NotPlain):
            plain.loads(line)
