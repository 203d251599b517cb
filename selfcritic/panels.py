"""The dashboard as data: sections of panels, each panel a title and the metrics it draws.

One definition serves both views of a run: `python -m selfcritic.dashboard` turns it into a
wandb workspace and `python -m selfcritic.plot` into one PNG per section. A panel names its
metrics exactly (`metrics`) or by one regular expression (`pattern`) for series whose names
carry a part the run decides: an environment's label in a mixture (`env/<label>/...`,
`eval/<label>/...`), a rubric aspect (`critic/verifier_agreement/<aspect>`), a layer
(`muonclip/max_logit/layer_N`). Patterns are anchored (`^...$`), so Python's `re.search` here
and wandb's regex matching select the same names.

Every name below is one the trainer logs (selfcritic/trainer.py, critic/, learner/, optim/,
model/router_balance.py, eval/, envs/nano/suite.py); tests/test_dashboard.py checks the exact
names against the source. Some panels only fill in some runs: `env/...` in mixtures, the
nano-world evaluation in nano runs, `moe/` with MoE models. Left out: metrics that answer no
question at a glance (`rollout/digest`, `weight_version`, `learner/tokens`, ...): the plot
command draws them in its "other" figure, and wandb's own default workspace still shows them.
No wandb import here, and no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class PanelError(ValueError):
    """A panel or section of the definition is malformed."""


@dataclass(frozen=True)
class Panel:
    """One plot: a title and either exact metric names or one anchored regular expression."""

    title: str
    metrics: tuple[str, ...] = ()
    pattern: str | None = None

    def __post_init__(self) -> None:
        if bool(self.metrics) == (self.pattern is not None):
            raise PanelError(f"panel {self.title!r}: give either metrics or a pattern, not both")
        if self.pattern is not None:
            if not (self.pattern.startswith("^") and self.pattern.endswith("$")):
                raise PanelError(f"panel {self.title!r}: pattern {self.pattern!r} must be ^...$")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise PanelError(f"panel {self.title!r}: bad pattern ({error})") from None

    def matches(self, name: str) -> bool:
        if self.pattern is not None:
            return re.search(self.pattern, name) is not None
        return name in self.metrics

    def select(self, names) -> list[str]:
        """The names among `names` this panel draws: its metrics in their order, or the
        pattern's matches in natural order (layer_2 before layer_10)."""
        present = set(names)
        if self.pattern is None:
            return [name for name in self.metrics if name in present]
        return sorted((n for n in present if self.matches(n)), key=natural_key)


@dataclass(frozen=True)
class Section:
    """A named group of panels; `key` names its PNG (`<key>.png`)."""

    key: str
    title: str
    panels: tuple[Panel, ...]
    is_open: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.key):
            raise PanelError(f"section {self.title!r}: key {self.key!r} is not a lowercase name")
        titles = [panel.title for panel in self.panels]
        repeated = sorted({t for t in titles if titles.count(t) > 1})
        if repeated:
            raise PanelError(f"section {self.title!r}: panel titles repeated: {repeated}")


def natural_key(name: str) -> list:
    """Sort key ordering the numbers inside names by value."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


ENV = r"env/[^/]+"  # a part of a mixture, env/<label>/...
EVAL = r"eval/(?:[^/]+/)?"  # eval/... of one environment, eval/<label>/... of a mixture's part

REWARDS = Section(
    "rewards",
    "Rewards",
    (
        Panel("Reward", ("reward/mean", "reward/verifiable_mean", "reward/critic_abs_mean")),
        Panel("Reward per environment", pattern=rf"^{ENV}/reward_mean$"),
        Panel("Verifier score per environment", pattern=rf"^{ENV}/verifiable_mean$"),
        Panel("Critic term per environment", pattern=rf"^{ENV}/critic_abs_mean$"),
        Panel("Groups per environment", pattern=rf"^{ENV}/groups$"),
        Panel(
            "Shares: critic only, no final answer, over budget",
            ("reward/critic_only_share", "reward/no_final_answer", "reward/over_budget_rate"),
        ),
        Panel(
            "Verifier failures",
            (
                "reward/verifier_failed",
                "reward/verifier_errors",
                "reward/verifier_timeouts",
                "reward/verifier_worker_deaths",
            ),
        ),
        Panel("Verifier failures by reason", pattern=r"^reward/verifier_failures/.+$"),
        Panel(
            "Dynamic sampling: groups",
            ("rollout/kept_groups", "rollout/discarded_groups", "rollout/draws"),
        ),
    ),
)

CRITIC = Section(
    "critic_health",
    "Critic health",
    (
        Panel("Agreement with verifiers", ("critic/agreement", "critic/agreement_soft")),
        Panel("Agreement with verifiers per aspect", pattern=r"^critic/verifier_agreement/.+$"),
        Panel("Probe gate: agreement per aspect", pattern=r"^critic/gate_agreement/.+$"),
        Panel("Probe gate: tie agreement per aspect", pattern=r"^critic/gate_tie_agreement/.+$"),
        Panel("Probe gate: aspect open", pattern=r"^critic/gate_open/.+$"),
        Panel("Position consistency", ("critic/position_consistency",)),
        Panel("Invalid verdicts (share)", ("critic/invalid_rate",)),
        Panel(
            "Invalid, forged, dropped and skipped pairs",
            (
                "critic/rejudged",
                "critic/forged",
                "critic/dropped_pairs",
                "critic/skipped_too_long",
                "critic/cut_prompts",
            ),
        ),
        Panel("Injection flips (held-out)", pattern=rf"^{EVAL}critic_injection_flip_rate$"),
        Panel(
            "Injection flips per family (held-out pairs)",
            pattern=rf"^{EVAL}critic_injection_flip_rate(?:/[^/]+|_held_out|_trained)$",
        ),
        Panel(
            "Anchor robustness (injection flips, consistency, alarm, pause)",
            (
                "critic/anchor_injection_flip_rate",
                "critic/anchor_consistency",
                "critic/anchor_robustness_alarm",
                "critic/paused",
            ),
        ),
        Panel(
            "Injection phrasings in the policy's samples",
            pattern=r"^policy/(?:injection_rate(?:/.+)?|watched_rate)$",
        ),
        Panel("Calibration on injected pairs", ("critic/agreement_injected",)),
        Panel("Decisiveness per aspect", pattern=r"^critic/decisive/.+$"),
        Panel("Length bias", ("critic/length_bias",)),
        Panel(
            "Anchor drift", ("critic/anchor_drift", "critic/anchor_shift", "critic/anchor_alarm")
        ),
        Panel(
            "Calibration pairs and examples",
            (
                "critic/calibration_pairs",
                "critic/calibration_examples",
                "critic/calibration_replayed",
            ),
        ),
        Panel("Calibration loss", ("learner/calibration_loss",)),
        Panel("RL verdict reward", ("critic/rl_verdict_reward",)),
        Panel("Critic scores", ("critic/score_std", "critic/score_min", "critic/score_max")),
        Panel("Judge weight lag", ("critic/weight_lag",)),
        Panel("Judgements", ("critic/judgements",)),
        Panel("Critic tokens", ("critic/tokens",)),
    ),
)

POLICY = Section(
    "policy_health",
    "Policy health",
    (
        Panel("KL to the reference", ("learner/kl",)),
        Panel("Entropy", ("learner/entropy",)),
        Panel("Clip fraction", pattern=r"^learner/clip_fraction(?:_epoch_[0-9]+)?$"),
        Panel("Importance ratio", pattern=r"^learner/ratio_mean(?:_epoch_[0-9]+)?$"),
        Panel("Truncated IS weight", ("learner/tis_weight_mean",)),
        Panel("Truncated IS: share of tokens cut to the cap", ("learner/tis_clipped_fraction",)),
        Panel("Response length (tokens)", pattern=rf"^(?:rollout|{ENV})/response_length$"),
        Panel("Truncated responses", pattern=rf"^(?:rollout|{ENV})/truncated_rate$"),
        Panel("Loss", ("learner/loss", "learner/ptx_loss")),
        Panel(
            "Informative groups (share)",
            ("learner/informative_groups", "critic/rl/informative_groups"),
        ),
        Panel("Engine vs learner logprobs (max gap)", ("learner/logprob_diff_max",)),
        Panel("Engine vs learner logprobs (mean gap)", ("learner/logprob_diff_mean",)),
        Panel("Sampling temperature", ("rollout/temperature",)),
        Panel("Turns and observation cuts", ("rollout/turns", "rollout/observation_cuts")),
        Panel("Episode counts (tool calls, errors)", pattern=r"^episode/.+$"),
    ),
)

OPTIMIZER = Section(
    "optimizer",
    "Optimizer",
    (
        Panel("Gradient norm", ("learner/grad_norm",)),
        Panel("Learning-rate scale", ("learner/lr_scale",)),
        Panel("Max attention logit (QK-Clip)", pattern=r"^muonclip/max_logit(?:/layer_[0-9]+)?$"),
        Panel("Heads clipped", ("muonclip/heads_clipped",)),
        Panel("MoE router imbalance", pattern=r"^moe/imbalance(?:_max|/layer_[0-9]+)$"),
    ),
)

TIME = Section(
    "time_per_phase",
    "Time per phase",
    (
        Panel(
            "Seconds per phase",
            ("time/rollout", "time/verify", "time/critic", "time/learn", "time/sync", "time/eval"),
        ),
        Panel("Seconds per step", ("time/step",)),
        Panel("Tokens per second", ("rollout/tokens_per_second", "learner/tokens_per_second")),
    ),
)

EVALUATION = Section(
    "evaluation",
    "Evaluation",
    (
        Panel(
            "Held-out verifier score", pattern=rf"^{EVAL}(?:verifier_mean|greedy_mean|pass_at_n)$"
        ),
        Panel(
            "Held-out accuracy and defects (nano world)",
            pattern=rf"^{EVAL}(?:accuracy|defect_rate|claim_rate|clean_rate|answer_kept_rate)$",
        ),
        Panel("Defect rates by kind (nano world)", pattern=rf"^{EVAL}(?:praise|meta|filler)_rate$"),
        Panel(
            "Critic on held-out pairs",
            pattern=rf"^{EVAL}critic_(?:agreement|consistency|invalid_rate|position_consistency"
            r"|verdict_consistency|worked_answer_accuracy)$",
        ),
        Panel("Critic agreement per aspect (held-out)", pattern=rf"^{EVAL}critic_agreement_[^/]+$"),
        Panel(
            "Critic position consistency per aspect (held-out)",
            pattern=rf"^{EVAL}critic_position_consistency_[^/]+$",
        ),
        Panel(
            "Critic verdict consistency per aspect (held-out)",
            pattern=rf"^{EVAL}critic_verdict_consistency_[^/]+$",
        ),
        Panel("Held-out response length", pattern=rf"^{EVAL}(?:response_tokens|response_chars)$"),
        Panel(
            "Held-out truncation, no final answer, verifier failures",
            pattern=rf"^{EVAL}(?:truncated_rate|no_final_answer|verifier_failed)$",
        ),
    ),
)

SECTIONS: tuple[Section, ...] = (REWARDS, CRITIC, POLICY, OPTIMIZER, TIME, EVALUATION)


def covered(name: str, sections: tuple[Section, ...] = SECTIONS) -> bool:
    """Whether some panel of `sections` draws the metric `name`."""
    return any(panel.matches(name) for section in sections for panel in section.panels)


def layout(names, sections: tuple[Section, ...] = SECTIONS) -> list[tuple[Section, list]]:
    """[(section, [(panel, its names)])] for the metrics `names`: panels with no name among
    them are left out, and so are sections left with no panel."""
    found = []
    for section in sections:
        panels = [(panel, panel.select(names)) for panel in section.panels]
        panels = [(panel, selected) for panel, selected in panels if selected]
        if panels:
            found.append((section, panels))
    return found
