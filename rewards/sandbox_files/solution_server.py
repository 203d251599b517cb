"""Runs in the solution's sandbox: imports the model's code, then answers the tests' requests.

Arguments: REQUEST_FD RESPONSE_FD. Requests and answers are lines of JSON (plain.py):
  {"op": "get", "name": N}  -> {"function": true} | {"value": V} | {"missing": true}
                               | {"unplain": "why"} (a class, a module, an object)
  {"op": "names"}           -> {"value": {"l": [public names]}}
  {"op": "call", "name": N, "args": V, "kwargs": V}
                            -> {"value": V} | {"raised": [TYPE, MESSAGE]} | {"unplain": "why"}
The first line sent is {"ready": true}, or {"raised": [TYPE, MESSAGE]} when the import failed.
Nothing here is trusted: the code it imports can rewrite any of it. The tests' process treats
every answer as untrusted data, so all that rewriting can achieve is a wrong answer.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plain  # noqa: E402

requests = os.fdopen(int(sys.argv[1]), "rb")
answers = os.fdopen(int(sys.argv[2]), "wb")


def print_exception():
    import traceback  # only when needed: every import is paid on every sample

    traceback.print_exc()


def send(message):
    answers.write(plain.dumps(message))
    answers.flush()


def raised(error):
    return {"raised": [type(error).__name__, str(error)[:1000]]}


def describe(solution, name):
    if not hasattr(solution, name):
        return {"missing": True}
    found = getattr(solution, name)
    if callable(found) and not isinstance(found, type):
        return {"function": True}
    try:
        return {"value": plain.encode(found)}
    except plain.NotPlain as error:
        return {"unplain": str(error)}


def call(solution, request):
    try:
        function = getattr(solution, request["name"])
        args = plain.decode(request["args"])
        kwargs = plain.decode(request["kwargs"])
        result = function(*args, **kwargs)
    except BaseException as error:  # the solution's error crosses as its type name and message
        print_exception()
        return raised(error)
    try:
        return {"value": plain.encode(result)}
    except plain.NotPlain as error:
        return {"unplain": str(error)}


def serve(solution):
    for line in requests:
        request = plain.loads(line)
        if request["op"] == "get":
            send(describe(solution, request["name"]))
        elif request["op"] == "names":
            crossing = {"function", "value"}
            public = [
                name
                for name in vars(solution)
                if not name.startswith("_") and crossing & set(describe(solution, name))
            ]
            send({"value": plain.encode(public)})
        else:
            send(call(solution, request))


def main():
    try:
        import solution
    except BaseException as error:
        print_exception()
        send(raised(error))
        return
    send({"ready": True})
    serve(solution)


main()
