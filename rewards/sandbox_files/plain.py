"""Plain data across the sandbox's pipe: the only values a call's arguments and results may be.

None, bool, int, float and str travel as JSON; containers as one-key objects naming their type:
{"l": [...]} list, {"t": [...]} tuple, {"s": [...]} set, {"f": [...]} frozenset,
{"d": [[key, value], ...]} dict (any plain hashable key), {"b": "hex"} bytes, and an int of
more than BIG_INT_BITS bits as {"i": "hex"}. Exact types
only: a subclass of int or str, an object with its own `__eq__`, a function, a class or a
generator is not plain and cannot cross. Nesting deeper than MAX_DEPTH cannot cross either (it
also catches a list that contains itself).

Both sides import this file: the solution's sandbox to send results (what it sends is not
trusted), the tests' process to read them (`decode` builds fresh builtin objects from JSON and
accepts nothing else). Standard library only, as few imports as possible: it runs in a root
that has nothing else, and its imports are paid on every sample.
"""

import json

MAX_DEPTH = 100
BIG_INT_BITS = 4096  # beyond this an int crosses in hexadecimal (no digit limit, linear time)
SCALARS = (type(None), bool, int, float, str)
SEQUENCES = {list: "l", tuple: "t", set: "s", frozenset: "f"}
BUILDERS = {"l": list, "t": tuple, "s": set, "f": frozenset}


class NotPlain(ValueError):
    """A value that cannot cross the sandbox's pipe."""


def encode(value, depth=0):
    """`value` as JSON-ready data, or NotPlain naming the first part that is not plain."""
    kind = type(value)
    if kind is int and value.bit_length() > BIG_INT_BITS:
        return {"i": format(value, "x")}  # JSON's decimal form stops at 4300 digits
    if kind in SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    if kind in SEQUENCES:
        return {SEQUENCES[kind]: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"b": value.hex()}
    raise NotPlain(f"a {kind.__name__} is not plain data")


def decode(data, depth=0):
    """The plain value `data` (JSON-loaded) stands for, or NotPlain when it is not well formed."""
    kind = type(data)
    if kind in SCALARS:
        return data
    if depth >= MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    if kind is not dict or len(data) != 1:
        raise NotPlain(f"malformed value of type {kind.__name__}")
    ((tag, items),) = data.items()
    if tag == "i" and type(items) is str:
        try:
            return int(items, 16)
        except ValueError:
            raise NotPlain("malformed int") from None
    if tag == "b" and type(items) is str:
        try:
            return bytes.fromhex(items)
        except ValueError:
            raise NotPlain("malformed bytes") from None
    if type(items) is not list:
        raise NotPlain(f"malformed {tag!r} value")
    if tag in BUILDERS:
        try:
            return BUILDERS[tag](decode(item, depth + 1) for item in items)
        except TypeError as error:  # an unhashable member of a set
            raise NotPlain(str(error)) from None
    if tag == "d":
        return _decode_dict(items, depth)
    raise NotPlain(f"unknown tag {tag!r}")


def _decode_dict(items, depth):
    result = {}
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise NotPlain("malformed dict item")
        key = decode(pair[0], depth + 1)
        try:
            result[key] = decode(pair[1], depth + 1)
        except TypeError as error:  # an unhashable key
            raise NotPlain(str(error)) from None
    return result


def dumps(message):
    """One message as a line of bytes."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def loads(line):
    """A message from a line; NotPlain when it is not a JSON object."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as error:
        raise NotPlain(f"not JSON: {str(error)[:100]}") from None
    if type(message) is not dict:
        raise NotPlain("a message must be a JSON object")
    return message
