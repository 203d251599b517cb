"""The nano world's supervised corpus: the warm-start's pairs and RL's PTX pairs.

Data (world.py, training split only):
- actor answers: a question -> a response, right or wrong and clean or defective at the
  configured rates (`env.corpus.*`), so the actor starts weak and with habits to unlearn;
- critic verdicts: the critic prompt of a labelled pair (`critic.template`, the better response
  shown first or second at random) -> what a right critic writes: in generative mode its checks
  and the verdict (" =19 X18- Y19+ #Y": on correctness it works the sum out, restates each
  answer and marks it; " X- Y+ #Y" on a style aspect; `env.corpus.side_by_side` restates the
  computed answer beside each one, on on_task too: `LabelledPair.critic_answer`), in
  probability mode the letter alone. The marks can weigh more than other tokens in the loss
  (`env.corpus.mark_weight`, in the warm-start and in RL's PTX). A share of the pairs tie on the
  judged aspect (the letter then names the first shown, so the two orders cancel): the critic
  learns that the other aspects do not decide this one.
Injection resistance (`critic.injection`, selfcritic/critic/injection.py): a share of the
critic pairs (`critic.injection.rate`) carries a phrasing of a training family appended to one
response, the better or the worse at even odds (ties too), the target unchanged: the verdict
is right only for the response that meets the aspect, whatever the other one says.
Every target ends with EOS. Left out: the training itself (selfcritic/warmstart.py).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from selfcritic.config import CriticConfig
from selfcritic.critic import injection
from selfcritic.critic.judge import Judge, prompt_encoder, verdict_token_ids
from selfcritic.envs.base import Pair
from selfcritic.envs.nano.options import NanoCorpusOptions, NanoWorldOptions
from selfcritic.envs.nano.world import (
    MARKS,
    ON_TASK,
    REPEAT_ASPECTS,
    STYLE_ASPECTS,
    DefectRates,
    LabelledPair,
    Task,
    draw_task,
    labelled_pair,
    synthetic_response,
    tie_pair,
)

# The code that makes the pairs: its text is part of the warm-start's cache key, so an edit to
# the tasks, the pairs or the critic's targets never reuses weights trained on the old data
RECIPE_SOURCES = (
    Path(__file__),
    Path(__file__).parent / "world.py",
    Path(__file__).parent / "phrases.py",
    Path(injection.__file__),  # the injection phrasings
)


def defect_rates(w: NanoCorpusOptions) -> DefectRates:
    return DefectRates(wrong=w.wrong, praise=w.praise, meta=w.meta, filler=w.filler, claim=w.claim)


class WarmStartData:
    """Makes the (context, target) pairs of actor answers and critic verdicts: the nano world's
    `Corpus` (selfcritic/envs/base.py)."""

    sources = RECIPE_SOURCES

    def __init__(self, options: NanoWorldOptions, critic: CriticConfig, tokenizer) -> None:
        self.options, self.corpus_options = options, options.corpus
        self.critic_cfg, self.tokenizer = critic, tokenizer
        self.encode = prompt_encoder(tokenizer)
        self.rates = defect_rates(options.corpus)
        self.judge = Judge(
            critic, self.encode, verdict_token_ids(tokenizer, critic.verdict_letters)
        )
        letters = tuple(critic.verdict_letters)
        self.injector = injection.Injector(critic.injection, letters, critic.verdict_marker)
        # (token id, weight) of the verdicts' marks in the loss (`env.corpus.mark_weight`)
        self.token_weights = tuple(
            (token_id, options.corpus.mark_weight)
            for token_id in tokenizer.convert_tokens_to_ids(list(MARKS))
        )
        # what the pairs depend on (with `sources`): the warm-start's cache key
        self.recipe = {
            "corpus": dataclasses.asdict(options.corpus),
            "tasks": {
                k: getattr(options, k)
                for k in ("max_operand", "rubric_only_share", "heldout_fraction")
            },
            "critic": {
                k: getattr(critic, k)
                for k in ("template", "verdict_letters", "verdict_marker", "verdict_mode")
            },
            # what the injected pairs depend on (`watch` is the policy side's, not training's)
            "injection": {
                k: getattr(critic.injection, k) for k in ("rate", "families", "held_out", "source")
            },
        }

    def target(self, text: str) -> tuple[int, ...]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return (*ids, self.tokenizer.eos_token_id)

    def actor(self, rng: random.Random) -> Pair:
        task = draw_task(self.options, rng)
        response = synthetic_response(task, self.rates, rng)
        return tuple(self.encode(task.question)), self.target(response)

    def critic(self, rng: random.Random, correctness: bool = True) -> Pair:
        """A verdict on a correctness pair (half the time, if `correctness`) or on one style
        aspect."""
        verifiable = correctness and rng.random() < 0.5
        while True:
            task: Task = draw_task(self.options, rng)
            if task.verifiable == verifiable:
                break
        aspect = "correct" if verifiable else self.repeat_aspect(rng)
        # some style pairs minimal (the defect is the only difference: learned fast), the rest
        # not (the better response is as often the longer one: no brevity shortcut)
        warm = self.corpus_options
        if rng.random() < warm.ties:
            pair = tie_pair(task, aspect, self.rates, rng)
        else:
            pair = labelled_pair(task, aspect, self.rates, rng, rng.random() < warm.minimal_pairs)
        return self.verdict(self.injected(pair, rng), swapped=rng.random() < 0.5)

    def injected(self, pair: LabelledPair, rng: random.Random) -> LabelledPair:
        """The pair with an injection appended to one response, either, at
        `critic.injection.rate` (the labels unchanged); at rate 0 it draws nothing."""
        drawn = self.injector.draw(pair.aspect, rng)
        if drawn is None:
            return pair
        if drawn.response == 0:
            return dataclasses.replace(pair, better=injection.inject(pair.better, drawn.text))
        return dataclasses.replace(pair, worse=injection.inject(pair.worse, drawn.text))

    def repeat_aspect(self, rng: random.Random) -> str:
        """on_task at `env.corpus.on_task_share`, else one of the defect aspects; all four alike
        when it is None."""
        share = self.corpus_options.on_task_share
        if share is None:
            return rng.choice(REPEAT_ASPECTS)
        return ON_TASK if rng.random() < share else rng.choice(sorted(STYLE_ASPECTS))

    def verdict(self, pair: LabelledPair, swapped: bool) -> Pair:
        """The critic prompt with the better response first (or second, `swapped`) and the
        answer a right critic gives."""
        critic = self.critic_cfg
        letters = tuple(critic.verdict_letters)
        answer = pair.verdict_letter(swapped, letters)
        if critic.verdict_mode == "generative":
            side_by_side = self.corpus_options.side_by_side
            answer = pair.critic_answer(swapped, letters, critic.verdict_marker, side_by_side)
        return tuple(self.encode(self.judge.prompt_text(pair.job(), swapped))), self.target(answer)

    def batch(
        self, rng: random.Random, actor: int, critic: int, correctness: bool = True
    ) -> tuple[Pair, ...]:
        actors = [self.actor(rng) for _ in range(actor)]
        return tuple(actors + [self.critic(rng, correctness) for _ in range(critic)])

    def warm_start_batch(self, rng: random.Random, step: int, steps: int) -> tuple[Pair, ...]:
        """Actor answers and critic verdicts; correctness verdicts after
        `correctness_after` of the steps."""
        warm = self.corpus_options
        correctness = step > warm.correctness_after * steps
        return self.batch(rng, warm.actor_examples, warm.critic_examples, correctness)

    def ptx_batch(self, rng: random.Random, count: int) -> tuple[Pair, ...]:
        """Critic verdicts only: in RL they keep the judging skill."""
        return self.batch(rng, 0, count)
