"""The learner's other terms: critic calibration, PTX, truncated importance sampling, entropy."""

from __future__ import annotations

import math

import pytest
import torch

from selfcritic.config import LearnerConfig, OptimConfig
from selfcritic.critic.examples import CriticExample
from selfcritic.learner.learner import (
    Learner,
    PolicyBatch,
    token_weight_grid,
    trust_engine_logprobs,
)
from selfcritic.learner.losses import calibration_loss, ptx_loss, truncated_is_weights


def test_calibration_loss_by_hand():
    # softmax over verdict logits [2, 0]: log-probs [2 - L, -L] with L = log(e^2 + 1)
    big_l = math.log(math.exp(2) + 1)
    loss = calibration_loss(
        torch.tensor([[2.0, 0.0]]),
        torch.tensor([[0.25, 0.75]]),
        torch.tensor([2.0]),
        total_weight=4.0,
    )
    cross_entropy = -(0.25 * (2 - big_l) + 0.75 * -big_l)
    assert float(loss) == pytest.approx(2.0 * cross_entropy / 4.0)


def test_ptx_and_tis_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0], [-3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert float(ptx_loss(logprobs, mask, total_tokens=3)) == pytest.approx(6.0 / 3)
    weights = truncated_is_weights(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0]), cap=2)
    assert torch.allclose(weights, torch.tensor([2.0, math.exp(-1)]))  # e^1 capped at 2


def _empty_batch(**extra) -> PolicyBatch:
    return PolicyBatch(
        prompts=[],
        completions=[],
        old_logprobs=[],
        advantages=[],
        temperature=1.0,
        max_new_tokens=8,
        **extra,
    )


def _tokens(path, text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return tokenizer, [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]


def test_calibration_moves_the_verdict_toward_its_target(nano_model_path):
    tokenizer, prompt = _tokens(nano_model_path, "C: Q: 3+4=\nX: 7\nY: 8\ncorrect->")
    x, y = tokenizer.convert_tokens_to_ids(["X", "Y"])
    example = CriticExample(tuple(prompt), (x, y), (1.0, 0.0))
    learner = Learner(nano_model_path, LearnerConfig(), OptimConfig(), trust_engine=True)

    def p_x() -> float:
        with torch.no_grad():
            logits = learner._last_position_logits([tuple(prompt)])[0, [x, y]]
        return float(torch.softmax(logits, -1)[0])

    before = p_x()
    losses = [
        learner.step(_empty_batch(critic_examples=(example,)))["calibration_loss"] for _ in range(5)
    ]
    assert losses[0] == pytest.approx(-math.log(before), rel=1e-4)  # CE of target (1, 0)
    assert p_x() > max(0.9, before + 0.3)


def test_ptx_lowers_the_curated_text_loss(nano_model_path):
    _, sequence = _tokens(nano_model_path, "Q: 2+2=\nA: 4")
    learner = Learner(
        nano_model_path, LearnerConfig(ptx_weight=1.0), OptimConfig(), trust_engine=True
    )
    losses = [
        learner.step(_empty_batch(ptx_sequences=((tuple(sequence[:1]), tuple(sequence[1:])),)))[
            "ptx_loss"
        ]
        for _ in range(5)
    ]
    assert losses[-1] < 0.7 * losses[0]


def test_ptx_token_weights_weight_each_target_token_in_the_loss(nano_model_path):
    """Weight 3 on "+": the loss is -(sum of w * logprob) / (number of targets), the logprobs
    read here from a separately loaded copy of the model."""
    from transformers import AutoModelForCausalLM

    tokenizer, sequence = _tokens(nano_model_path, "C: X7+ Y8-")
    context, target = tuple(sequence[:4]), tuple(sequence[4:])
    plus = tokenizer.convert_tokens_to_ids("+")
    weights = [3.0 if token == plus else 1.0 for token in target]
    assert weights.count(3.0) == 1
    reference = AutoModelForCausalLM.from_pretrained(str(nano_model_path), dtype=torch.float32)
    with torch.no_grad():
        logits = reference(input_ids=torch.tensor([sequence])).logits[0, 3:-1]
    logprobs = torch.log_softmax(logits.double(), -1)[torch.arange(len(target)), list(target)]
    expected = -sum(w * float(lp) for w, lp in zip(weights, logprobs, strict=True)) / len(target)
    learner = Learner(
        nano_model_path, LearnerConfig(ptx_weight=1.0), OptimConfig(), trust_engine=True
    )
    batch = _empty_batch(ptx_sequences=((context, target),), ptx_token_weights=((plus, 3.0),))
    assert learner.step(batch)["ptx_loss"] == pytest.approx(expected, rel=1e-4)
    assert token_weight_grid(torch.tensor([[plus, 5], [7, plus]]), {plus: 3.0}).tolist() == [
        [3.0, 1.0],
        [1.0, 3.0],
    ]


def test_untrusted_engine_logprobs_are_corrected_and_entropy_reported(nano_model_path):
    batch = PolicyBatch(
        prompts=[(1, 56, 81, 98)] * 2,
        completions=[(20, 21, 22), (23, 24)],
        old_logprobs=[(-100.0,) * 3, (-100.0,) * 2],
        advantages=[1.0, -1.0],
        temperature=1.0,
        max_new_tokens=4,
    )
    learner = Learner(
        nano_model_path, LearnerConfig(tis_cap=2.0), OptimConfig(), trust_engine=False
    )
    metrics = learner.step(batch)
    assert metrics["tis_weight_mean"] == pytest.approx(2.0)  # e^(~95) capped at 2 everywhere
    assert metrics["logprob_diff_max"] > 90  # the mismatch is reported, not hidden
    vocab = learner.model.config.vocab_size
    assert 0 < metrics["entropy"] <= math.log(vocab) + 1e-4  # at most uniform over the vocabulary


def test_unreported_engine_logprobs_leave_the_learners_own(nano_model_path):
    """Trusted engine logprobs left out (Sample.logprobs empty): the old policy is the learner's
    own forward, so the update is the recompute setting's to the bit, ratios are exactly 1 and
    no engine difference is reported; a row that reports them is still checked."""
    rows = dict(
        prompts=[(1, 56, 81, 98)] * 2,
        completions=[(20, 21, 22), (23, 24)],
        advantages=[1.0, -1.0],
        temperature=1.0,
        max_new_tokens=4,
    )
    trusted = Learner(nano_model_path, LearnerConfig(), OptimConfig(), trust_engine=True)
    recompute = Learner(
        nano_model_path, LearnerConfig(tis_cap=None), OptimConfig(), trust_engine=False
    )
    metrics = trusted.step(PolicyBatch(old_logprobs=[(), ()], **rows))
    recompute.step(PolicyBatch(old_logprobs=[(-1.0,) * 3, (-1.0,) * 2], **rows))
    assert "logprob_diff_max" not in metrics
    assert metrics["ratio_mean"] == 1.0 and metrics["clip_fraction"] == 0.0
    for mine, theirs in zip(trusted.model.parameters(), recompute.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    mixed = trusted.step(PolicyBatch(old_logprobs=[(), (-100.0,) * 2], **rows))
    assert mixed["logprob_diff_max"] > 90  # only the reporting row is compared


def test_lr_scale_scales_the_update(nano_model_path):
    """Muon's and AdamW's steps (weight decay included) are linear in the rate: half the factor,
    half the change of every weight; a factor of 0 changes nothing."""
    _, sequence = _tokens(nano_model_path, "Q: 2+2=\nA: 4")
    ptx = ((tuple(sequence[:1]), tuple(sequence[1:])),)
    changes = {}
    for scale in (1.0, 0.5, 0.0):
        learner = Learner(
            nano_model_path, LearnerConfig(ptx_weight=1.0), OptimConfig(), trust_engine=True
        )
        before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
        metrics = learner.step(_empty_batch(ptx_sequences=ptx, lr_scale=scale))
        assert metrics["lr_scale"] == scale
        changes[scale] = {n: p.detach() - before[n] for n, p in learner.model.named_parameters()}
    for name in ("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "lm_head.weight"):
        full, half = changes[1.0][name], changes[0.5][name]  # a Muon and an AdamW weight
        assert full.abs().max() > 0
        torch.testing.assert_close(half, 0.5 * full, rtol=1e-4, atol=1e-7)
    assert all(change.abs().max() == 0 for change in changes[0.0].values())


def test_a_user_registered_loss_trains_with_kl(nano_model_path):
    """A loss registered with its normalisation works with KL on: the KL term is normalised as
    the user's loss says (here "token": over all completion tokens of the batch)."""
    from selfcritic.learner.losses import kl_k3, loss_normalisation, normalise, register_loss

    @register_loss("test_plain_pg", "token")
    def plain_pg(logprobs, old_logprobs, advantages, mask, scale, token_weights=None):
        per_token = -logprobs * advantages.unsqueeze(1)  # REINFORCE on the sampled tokens
        return normalise(per_token, mask, "token", scale), {}

    assert loss_normalisation("test_plain_pg") == "token"
    batch = PolicyBatch(
        prompts=[(1, 56, 81, 98)] * 2,
        completions=[(20, 21, 22), (23, 24)],
        old_logprobs=[(), ()],
        advantages=[1.0, -1.0],
        temperature=1.0,
        max_new_tokens=4,
    )
    cfg = LearnerConfig(loss="test_plain_pg", kl_beta=0.1)
    learner = Learner(nano_model_path, cfg, OptimConfig(), trust_engine=True)
    first = learner.step(batch)
    assert first["kl"] == 0.0  # the policy is still the reference
    second = learner.step(batch)
    assert second["kl"] > 0 and math.isfinite(second["loss"])
    assert kl_k3(torch.zeros(1), torch.zeros(1)).item() == 0.0
    with pytest.raises(ValueError, match="normalisation must be one of"):
        register_loss("test_bad", "per_sequence")


# Engine logprobs built as the learner's own plus known offsets (engine = own + delta), so the
# gap |engine - learner| is |delta| and the TIS ratio pi_old / pi_engine is e^-delta.
DELTAS = [(-1.0, 0.3, -0.2), (), (0.4, 9.0, 0.4)]  # row 1 unreported
LOSS_MASKS = ((1, 1, 1), (1, 1), (1, 0, 1))  # row 2's middle token is the environment's


def _gap_batch(learner: Learner) -> PolicyBatch:
    rows = dict(
        prompts=[(1, 56, 81, 98)] * 3,
        completions=[(20, 21, 22), (23, 24), (25, 26, 27)],
        advantages=[1.0, -1.0, 0.5],
        temperature=0.9,
        max_new_tokens=4,
        loss_masks=LOSS_MASKS,
    )
    own = learner.own_logprobs(PolicyBatch(old_logprobs=[(), (), ()], **rows))
    engine = [
        tuple(lp + d for lp, d in zip(mine, delta, strict=False)) if delta else ()
        for mine, delta in zip(own, DELTAS, strict=True)
    ]
    return PolicyBatch(old_logprobs=engine, **rows)


@pytest.mark.parametrize("budget", [10_000, 8])  # one micro-batch, or one per row
def test_logprob_gap_and_truncated_share_by_hand(nano_model_path, budget):
    """Reported model tokens: row 0 (gaps 1.0, 0.3, 0.2) and row 2 (0.4, 0.4; its 9.0 is on an
    environment token): mean 2.3 / 5, max 1.0. Cap 2: only e^1 is truncated, 1 of the 7 model
    tokens (row 1's unreported tokens weigh exactly 1)."""
    cfg = LearnerConfig(tis_cap=2.0, max_tokens_per_micro_batch=budget)
    learner = Learner(nano_model_path, cfg, OptimConfig(), trust_engine=False)
    metrics = learner.step(_gap_batch(learner))
    assert metrics["micro_batches"] == (1 if budget > 100 else 3)
    assert metrics["logprob_diff_mean"] == pytest.approx(2.3 / 5, abs=1e-5)
    assert metrics["logprob_diff_max"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["tis_clipped_fraction"] == pytest.approx(1 / 7)
    e = math.exp
    weights = [2.0, e(-0.3), e(0.2), 1.0, 1.0, e(-0.4), e(-0.4)]
    assert metrics["tis_weight_mean"] == pytest.approx(sum(weights) / 7, abs=1e-5)


def test_trusted_engine_reports_the_gap_but_no_truncation(nano_model_path):
    learner = Learner(nano_model_path, LearnerConfig(), OptimConfig(), trust_engine=True)
    metrics = learner.step(_gap_batch(learner))
    assert metrics["logprob_diff_mean"] == pytest.approx(2.3 / 5, abs=1e-5)
    assert "tis_clipped_fraction" not in metrics and metrics["tis_weight_mean"] == 1.0


def test_rank_slices_combine_into_the_whole_batchs_gap(nano_model_path):
    """Each slice normalised by the whole batch's reported tokens: the ranks' sums are the
    whole batch's means (rows 0 | 1, 2: 1.5 / 5 + 0.8 / 5; model tokens 3 / 7 + 4 / 7)."""
    from selfcritic.learner.distributed import BatchTotals, split_batch
    from selfcritic.learner.group import combine_metrics

    learner = Learner(nano_model_path, LearnerConfig(tis_cap=2.0), OptimConfig(), False)
    batch = _gap_batch(learner)
    totals = BatchTotals.of(batch)
    assert (totals.tokens, totals.reported_tokens) == (7, 5)
    parts = split_batch(batch, 2)
    assert [len(p.prompts) for p in parts] == [2, 1]
    per_rank = [learner._gradients(part, totals) for part in parts]
    assert per_rank[0]["logprob_diff_mean"] == pytest.approx(1.5 / 5, abs=1e-5)
    combined = combine_metrics(per_rank)
    assert combined["logprob_diff_mean"] == pytest.approx(2.3 / 5, abs=1e-5)
    assert combined["logprob_diff_max"] == pytest.approx(1.0, abs=1e-5)
    assert combined["tis_clipped_fraction"] == pytest.approx(1 / 7)


def test_recomputed_old_logprobs_are_reported_every_step():
    """Not trusted (GPUs, bfloat16 on either side): the engine reports logprobs on every step,
    so the gap is logged every step."""
    from selfcritic.trainer import engine_logprobs_due

    for rollout, on_gpu, learner_dtype in [
        ("float32", True, "auto"),
        ("bfloat16", False, "auto"),
        ("float32", False, "bfloat16"),
    ]:
        trusted = trust_engine_logprobs("auto", rollout, on_gpu, learner_dtype)
        assert not trusted
        assert all(engine_logprobs_due(step, 10, trusted) for step in range(1, 25))
