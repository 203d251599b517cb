"""From pairwise verdicts to one score per response: pure functions.

Vocabulary: a verdict is P(the response shown as X wins) in [0, 1] (None: invalid). A pair's
outcome, for the response called `first`, is in [0, 1]: 1 a win, 0 a loss, 0.5 a tie.

1. Debiasing: the outcome is the mean of `first`'s win probability over both orders, so a hard
   verdict that flips with the order is exactly a tie, and an invalid verdict makes the pair a tie.
2. Aspects: a pair's per-aspect outcomes become one outcome. `weighted`: the weighted mean over
   all aspects. `precedence`: the mandatory aspects' weighted outcome m decides, and the optional
   aspects' outcome o only fills the part m leaves undecided: outcome = max(0, 2m-1) + (1-|2m-1|)
   * o. With hard verdicts this is lexicographic (a mandatory win can never be overturned); with
   soft ones it is continuous.
3. Scores: `win_rate` (default) is each response's mean outcome over its comparisons (0.5 when
   never compared). `bradley_terry` fits Davidson's model (Bradley-Terry with ties): P(i beats j)
   = pi_i / D, P(tie) = nu sqrt(pi_i pi_j) / D, D = pi_i + pi_j + nu sqrt(pi_i pi_j), with a soft
   outcome counted as max(0, 2o-1) wins, max(0, 1-2o) losses and 1-|2o-1| ties. Log-strengths
   theta have a Gaussian prior N(0, prior_std^2) and log(nu) a N(0, 1) prior, so a response that
   wins everything, or a schedule whose comparison graph is not connected, still gets finite
   scores (each isolated part is pulled to 0). The MAP estimate is found by Newton's method: the
   negative log posterior is convex in (theta, log nu) (a log-sum-exp of affine functions plus
   quadratics), 50 or fewer steps on n <= 64 parameters; torch gives exact Hessians, so no solver
   library is needed. A response's score is sigmoid(theta_i - mean theta): its chance of beating an
   average response of the group, on the same 0-1 scale as a win rate.
Scores are centred per group by the caller.
"""

from __future__ import annotations

import math

import torch

Outcome = tuple[int, int, float]  # (first, second, outcome for first)


def pair_outcome(forward: float | None, backward: float | None) -> float:
    """Outcome for `first` from P(X wins) with `first` as X (`forward`) and as Y (`backward`)."""
    if forward is None or backward is None:
        return 0.5
    return (forward + 1.0 - backward) / 2


def order_flipped(forward: float | None, backward: float | None) -> bool:
    """Both orders valid and both preferring the same position (so different responses)."""
    if forward is None or backward is None:
        return False
    return (forward > 0.5) == (backward > 0.5)


def weighted_outcome(outcomes: dict[str, float], weights: dict[str, float]) -> float | None:
    """Weighted mean of per-aspect outcomes over the aspects present; None when none is."""
    present = [name for name in outcomes if name in weights]
    total = sum(weights[name] for name in present)
    if not present or total <= 0:
        return None
    return sum(weights[name] * outcomes[name] for name in present) / total


def combine_aspects(
    outcomes: dict[str, float],
    weights: dict[str, float],
    mandatory: set[str],
    rule: str = "precedence",
) -> float:
    """One outcome for a pair from its per-aspect outcomes (see the module docstring)."""
    if rule == "weighted" or not mandatory & outcomes.keys():
        combined = weighted_outcome(outcomes, weights)
        return 0.5 if combined is None else combined
    must = weighted_outcome({k: v for k, v in outcomes.items() if k in mandatory}, weights)
    rest = weighted_outcome({k: v for k, v in outcomes.items() if k not in mandatory}, weights)
    decided = abs(2 * must - 1)
    return max(0.0, 2 * must - 1) + (1 - decided) * (0.5 if rest is None else rest)


def win_rates(n: int, outcomes: list[Outcome]) -> list[float]:
    """Mean outcome per response over its comparisons; 0.5 for one never compared."""
    totals, counts = [0.0] * n, [0] * n
    for first, second, outcome in outcomes:
        totals[first] += outcome
        totals[second] += 1 - outcome
        counts[first] += 1
        counts[second] += 1
    return [total / count if count else 0.5 for total, count in zip(totals, counts, strict=True)]


def outcome_counts(outcome: float) -> tuple[float, float, float]:
    """A soft outcome as (wins, ties, losses) of `first`, summing to 1."""
    return max(0.0, 2 * outcome - 1), 1 - abs(2 * outcome - 1), max(0.0, 1 - 2 * outcome)


def davidson_negative_log_posterior(
    params: torch.Tensor, outcomes: list[Outcome], prior_std: float
) -> torch.Tensor:
    """-log posterior of (theta_0..theta_{n-1}, log nu) given the outcomes."""
    theta, log_nu = params[:-1], params[-1]
    first = torch.tensor([o[0] for o in outcomes], dtype=torch.long)
    second = torch.tensor([o[1] for o in outcomes], dtype=torch.long)
    counts = torch.tensor([outcome_counts(o[2]) for o in outcomes], dtype=params.dtype)
    a, b = theta[first], theta[second]
    tie = log_nu + (a + b) / 2
    log_norm = torch.logsumexp(torch.stack([a, b, tie]), dim=0)
    log_likelihood = counts[:, 0] * (a - log_norm) + counts[:, 1] * (tie - log_norm)
    log_likelihood = log_likelihood + counts[:, 2] * (b - log_norm)
    prior = (theta**2).sum() / (2 * prior_std**2) + log_nu**2 / 2
    return -log_likelihood.sum() + prior


def davidson_strengths(
    n: int, outcomes: list[Outcome], prior_std: float = 1.0
) -> tuple[list[float], float]:
    """MAP log-strengths theta (length n) and the tie parameter nu of Davidson's model."""
    params = torch.zeros(n + 1, dtype=torch.float64)
    if not outcomes:
        return [0.0] * n, 1.0

    def objective(p: torch.Tensor) -> torch.Tensor:
        return davidson_negative_log_posterior(p, outcomes, prior_std)

    for _ in range(50):
        gradient = torch.autograd.functional.jacobian(objective, params)
        hessian = torch.autograd.functional.hessian(objective, params)
        step = torch.linalg.solve(hessian, gradient)
        if float(step.abs().max()) < 1e-10:
            break
        current, scale = float(objective(params)), 1.0
        while float(objective(params - scale * step)) > current and scale > 1e-6:
            scale /= 2  # backtracking: Newton steps can overshoot far from the optimum
        params = params - scale * step
    return params[:-1].tolist(), math.exp(float(params[-1]))


def bradley_terry_scores(n: int, outcomes: list[Outcome], prior_std: float = 1.0) -> list[float]:
    """sigmoid(theta_i - mean theta) per response (see the module docstring)."""
    theta, _ = davidson_strengths(n, outcomes, prior_std)
    mean = sum(theta) / n
    return [1 / (1 + math.exp(mean - t)) for t in theta]


AGGREGATIONS = {
    "win_rate": lambda n, outcomes, prior_std: win_rates(n, outcomes),
    "bradley_terry": bradley_terry_scores,
}


def centred(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [value - mean for value in values]
