"""Runs the tests inside the sandbox: reads the nonce, imports the solution, runs each test_*.

Each passing test is reported as "<nonce> PASS <name>" on the result descriptor (fd 3 by
default); the host trusts nothing else. Standard input is closed before the solution runs.
"""

import os
import sys
import traceback


def main() -> None:
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    os.close(0)
    result_fd = int(os.environ.get("SANDBOX_RESULT_FD", "3"))
    report = os.fdopen(result_fd, "w", buffering=1)
    sys.path.insert(0, os.getcwd())
    try:
        import tests  # imports `solution` itself
    except BaseException:
        traceback.print_exc()
        return
    for name in [n for n in dir(tests) if n.startswith("test_")]:
        try:
            getattr(tests, name)()
        except BaseException:
            traceback.print_exc()
            report.write(f"{nonce} FAIL {name}\n")
        else:
            report.write(f"{nonce} PASS {name}\n")


main()
