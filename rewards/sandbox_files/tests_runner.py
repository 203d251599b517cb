"""Runs in the tests' sandbox: the task's tests, calling the solution through a proxy.

Arguments: REQUEST_FD ANSWER_FD RESULT_FD CALL_SECONDS. No code of the solution ever runs here:
`solution` is a proxy module whose functions send their arguments as plain data (plain.py) to
the solution's sandbox and read back a plain result, so every assertion is evaluated here, on
values built here. Each test's verdict is written as "PASS name" or "FAIL name" on RESULT_FD,
which only this process holds.

What crosses, and what a test sees:
- arguments and results are copies: a function that changes its argument in place changes its
  own copy, which the test does not see;
- tuples, sets, frozensets, bytes and dicts with any plain keys cross as themselves;
- an exception raised by the solution is raised here as the builtin exception of that name with
  its message (so `except ValueError` works), or as SolutionError when the name is not a
  builtin exception;
- a result or value that is not plain data (a class, a generator, an object with its own
  `__eq__`), an argument that is not (a callback), an answer that is malformed or too long, a
  call that takes longer than CALL_SECONDS, and a solution process that is gone all fail
  closed: the call raises SolutionUnreachable and the test fails, even if it catches that.
"""

import builtins
import keyword
import os
import select
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plain  # noqa: E402

MAX_ANSWER_BYTES = 8 * 1024 * 1024
NOT_RAISED = (StopIteration, StopAsyncIteration)  # would change control flow in the tests


class SolutionError(Exception):
    """An exception the solution raised whose type is not a builtin exception."""


class SolutionUnreachable(Exception):
    """The call could not be made or answered as plain data; the test fails whatever it does."""


class Channel:
    """Requests to the solution's sandbox and its answers, each answer within a deadline."""

    def __init__(self, request_fd, answer_fd, call_seconds):
        self.request_fd, self.answer_fd = request_fd, answer_fd
        self.call_seconds = call_seconds
        self.buffer = b""
        self.broken = None  # why the channel is no longer used
        self.failures = 0  # calls that failed closed; a test during which this grows fails
        self.ready = False

    def fail(self, why, breaks=True):
        print(f"a call failed closed: {why}", file=sys.stderr)
        self.failures += 1
        if breaks and self.broken is None:
            self.broken = why
        raise SolutionUnreachable(why)

    def ask(self, request):
        if not self.ready:
            self.ready = True
            self.expect_ready()
        if self.broken is not None:
            self.fail(f"the solution is unreachable: {self.broken}")
        try:
            os.write(self.request_fd, plain.dumps(request))
        except OSError as error:
            self.fail(f"the solution's process is gone ({error})")
        return self.answer()

    def expect_ready(self):
        answer = self.answer()
        if "raised" in answer:
            kind, message = answer["raised"]
            self.broken = f"importing the solution raised {kind}: {message}"
        elif answer.get("ready") is not True:
            self.broken = "the solution's process did not start properly"

    def answer(self):
        deadline = time.monotonic() + self.call_seconds
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f"no answer within {self.call_seconds} s")
            if not select.select([self.answer_fd], [], [], left)[0]:
                continue
            chunk = os.read(self.answer_fd, 65536)
            if not chunk:
                self.fail("the solution's process ended")
            self.buffer += chunk
            if len(self.buffer) > MAX_ANSWER_BYTES:
                self.fail(f"an answer longer than {MAX_ANSWER_BYTES} bytes")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return plain.loads(line)
        except plain.NotPlain as error:
            self.fail(f"a malformed answer: {error}")


def received(channel, answer):
    """The plain value an answer carries, or the exception it stands for, raised."""
    try:
        if "value" in answer:
            return plain.decode(answer["value"])
    except (ValueError, TypeError, RecursionError) as error:  # NotPlain, bad hex
        channel.fail(f"a malformed value: {error}", breaks=False)
    if "raised" in answer and _is_pair_of_strings(answer["raised"]):
        raise solution_exception(*answer["raised"])
    if "unplain" in answer:
        channel.fail(f"not plain data: {str(answer['unplain'])[:200]}", breaks=False)
    channel.fail("a malformed answer", breaks=False)


def _is_pair_of_strings(value):
    return type(value) is list and len(value) == 2 and all(type(v) is str for v in value)


def solution_exception(kind, message):
    builtin = getattr(builtins, kind, None)
    usable = isinstance(builtin, type) and issubclass(builtin, Exception)
    if usable and not issubclass(builtin, NOT_RAISED):
        try:
            return builtin(message)
        except TypeError:  # e.g. UnicodeDecodeError wants five arguments
            pass
    return SolutionError(f"{kind}: {message}")


def proxy_function(channel, name):
    def call(*args, **kwargs):
        try:
            request = {"op": "call", "name": name, "args": plain.encode(list(args))}
            request["kwargs"] = plain.encode(dict(kwargs))
        except plain.NotPlain as error:
            channel.fail(f"an argument of {name}() is not plain data: {error}", breaks=False)
        return received(channel, channel.ask(request))

    call.__name__ = call.__qualname__ = name
    return call


def star_names(names):
    """What `from solution import *` may bind in the tests: public identifiers that shadow
    neither a builtin (a proxy `abs` or `len` would let the solution decide the tests'
    arithmetic) nor a name the tests already bound (an earlier import, a test)."""
    importer = vars(sys.modules.get("tests", types.ModuleType("tests")))
    if type(names) is not list:
        return []
    return [
        name
        for name in names
        if type(name) is str
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith(("_", "test"))
        and not hasattr(builtins, name)
        and name not in importer
    ]


class SolutionModule(types.ModuleType):
    """`solution` as the tests see it: each name looked up in the solution's sandbox."""

    def __init__(self, channel):
        super().__init__("solution")
        self._channel = channel

    def __getattr__(self, name):
        if name.startswith("__") and name != "__all__":
            raise AttributeError(name)
        if name == "__all__":
            return star_names(received(self._channel, self._channel.ask({"op": "names"})))
        answer = self._channel.ask({"op": "get", "name": name})
        if answer.get("function") is True:
            function = proxy_function(self._channel, name)
            setattr(self, name, function)
            return function
        if answer.get("missing") is True:
            raise AttributeError(f"the solution defines no {name!r}")
        return received(self._channel, answer)


def print_exception():
    import traceback  # only when a test fails: every import is paid on every sample

    traceback.print_exc()


def main():
    request_fd, answer_fd, result_fd = (int(a) for a in sys.argv[1:4])
    channel = Channel(request_fd, answer_fd, float(sys.argv[4]))
    # the host's list of the test functions (read from the source with `ast`): only these run,
    # so nothing the solution lends the tests (`from solution import *`) can add a test
    names = [name for name in sys.argv[5].split(",") if name.isidentifier()]
    sys.modules["solution"] = SolutionModule(channel)
    report = os.fdopen(result_fd, "w", buffering=1)
    try:
        import tests
    except BaseException:
        print_exception()
        return
    for name in names:
        failures = channel.failures
        function = vars(tests).get(name)
        try:
            if not is_own_test(function):
                raise TypeError(f"{name} is no longer the tests' own function")
            function()
            ok = channel.failures == failures
        except BaseException:
            print_exception()
            ok = False
        report.write(f"{'PASS' if ok else 'FAIL'} {name}\n")


def is_own_test(function):
    """A function defined in the tests' source (not a proxy that shadowed it)."""
    code = getattr(function, "__code__", None)
    return type(function) is types.FunctionType and code.co_filename.endswith("tests.py")


main()
