"""`env=reasoning_gym`: any task of the `reasoning-gym` package, by name, with its options.

Each prompt is an entry of `reasoning_gym.create_dataset(task, size, seed, **options)` (the
package generates entry i from the seed and i, so an entry is cheap and reproducible). Its
reference names the entry (task, options, seed, size, index) as JSON, and the `reasoning_gym`
verifier (rewards/procedural.py) rebuilds it and scores the answer with the task's own
`score_answer`. Training entries come from a seed derived from `data.seed`, the held-out ones
from `heldout_seed`; a training entry whose question is also held out is skipped, so the two
never share a question even where a task's space is small.
A warm-start corpus (`corpus`): the first `corpus_size` training entries' answers as
demonstrations (selfcritic/envs/sft.py; inside `answer_tag` where it is set, though the critic
pairs show the bare answers), with critic verdicts on answer-labelled pairs mixed in
at `verdicts.share` (selfcritic/envs/verdicts.py); the same entries label the aspect gate's
probes (`probes`) and train a `model.tokenizer=bpe` tokenizer (`texts`). Left out: curricula
(the options are fixed for a run) and composite datasets.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfcritic.config import Config, ConfigError, keyed, setting
from selfcritic.critic.judge import PairJob
from selfcritic.envs.base import Prompt, SingleTurn
from selfcritic.envs.filler import has_filler, with_filler
from selfcritic.envs.reasoning import check_tags
from selfcritic.envs.registry import register_environment
from selfcritic.envs.sft import PairsCorpus, demonstration_pairs
from selfcritic.envs.verdicts import Labeller, VerdictOptions, with_verdicts
from selfcritic.model.chat import prompt_encoder


@dataclass
class ReasoningGymOptions:
    """A reasoning-gym task (selfcritic/envs/reasoning_gym_env.py)."""

    name: str = "reasoning_gym"
    task: str = "???"  # a reasoning-gym dataset name, e.g. basic_arithmetic, spell_backward
    options: dict[str, Any] = field(default_factory=dict)  # the task's own (its difficulty)
    train_size: int = setting(100_000, ge=1)  # training entries to draw from
    heldout_size: int = setting(200, ge=1)  # held-out entries
    heldout_seed: int = 1_000_003  # the held-out entries' seed (training's derive from data.seed)
    prompt_template: str = "{question}"  # the text the model sees, e.g. "Q: {question}\nA:"
    # the answer is the text inside <TAG>...</TAG> (the last one) when set, else the whole
    # response, stripped
    answer_tag: str | None = None
    rubric: str = "k2_core"
    # [OPEN, CLOSE] of a reasoning block (e.g. [<think>, </think>]) stripped before the verifier
    # and the critic see a response (selfcritic/envs/reasoning.py); None: they see it whole
    reasoning_tags: list[str] | None = None
    # the training entries whose answers the warm-start shows (and the critic pairs and the
    # gate's probes are labelled with): the first `corpus_size`, held-out questions skipped
    corpus_size: int = setting(2000, ge=1)
    corpus_batch: int = setting(16, ge=1)  # supervised pairs per warm-start step
    # critic verdicts on answer-labelled pairs in the corpus (selfcritic/envs/verdicts.py)
    verdicts: VerdictOptions = field(default_factory=VerdictOptions)


@register_environment("reasoning_gym", ReasoningGymOptions)
class ReasoningGym(SingleTurn):
    """Entries of one reasoning-gym task; its `score_answer` as the verifier."""

    verifier = "reasoning_gym"

    def __init__(self, options: ReasoningGymOptions, cfg: Config) -> None:
        from reasoning_gym.factory import DATASETS

        if options.task not in DATASETS:
            raise ConfigError(
                keyed(
                    "env.task",
                    f"no reasoning-gym task {options.task!r}; e.g. {sorted(DATASETS)[:12]}",
                )
            )
        self.name, self.options, self.rubric = options.name, options, options.rubric
        self.critic_cfg, self.chat_template = cfg.critic, cfg.data.chat_template
        self.reasoning_tags = check_tags(options.reasoning_tags)
        self.train_seed = cfg.data.seed * 7919 + 17  # never heldout_seed for data.seed in range
        try:
            self.heldout_set = self._entries(options.heldout_seed, options.heldout_size)
            self.training_set = self._entries(self.train_seed, options.train_size)
        except (TypeError, ValueError, AssertionError) as error:  # the task's option checks
            raise ConfigError(keyed("env.options", f"{options.task}: {error}")) from error
        self._heldout = [
            self._prompt(self.heldout_set, options.heldout_seed, i)
            for i in range(options.heldout_size)
        ]
        self._heldout_questions = {
            self.heldout_set[i]["question"] for i in range(options.heldout_size)
        }

    def _entries(self, seed: int, size: int):
        import reasoning_gym

        return reasoning_gym.create_dataset(
            self.options.task, size=size, seed=seed, **self.options.options
        )

    def _prompt(self, dataset, seed: int, index: int) -> Prompt:
        entry = dataset[index]
        reference = {
            "task": self.options.task,
            "options": self.options.options,
            "seed": seed,
            "size": len(dataset),
            "index": index,
            "answer_tag": self.options.answer_tag,
        }
        text = self.options.prompt_template.format(question=entry["question"])
        return Prompt(text=text, reference=json.dumps(reference, sort_keys=True))

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        rng = random.Random(f"reasoning_gym:{self.train_seed}:{step}:{draw}")
        found: list[Prompt] = []
        for _ in range(100 * count):  # a task whose questions are all held out stops here
            index = rng.randrange(self.options.train_size)
            if self.training_set[index]["question"] not in self._heldout_questions:
                found.append(self._prompt(self.training_set, self.train_seed, index))
                if len(found) == count:
                    return found
        raise RuntimeError(
            f"reasoning-gym task {self.options.task!r}: almost every training question is held "
            "out; lower env.heldout_size or widen the task's options"
        )

    def held_out(self) -> list[Prompt]:
        return self._heldout

    @functools.cached_property
    def _answered(self) -> list[tuple[str, str]]:
        size = min(self.options.corpus_size, self.options.train_size)
        entries = (self.training_set[i] for i in range(size))
        template = self.options.prompt_template
        return [
            (template.format(question=e["question"]), str(e["answer"]))
            for e in entries
            if e["question"] not in self._heldout_questions
        ]

    def answered(self) -> list[tuple[str, str]]:
        """(prompt text, answer) of the corpus's training entries (held-out questions
        skipped), made once: the corpus, its critic pairs, the probes and the texts share it."""
        return self._answered

    def texts(self) -> list[str]:
        """What a `model.tokenizer=bpe` tokenizer learns from: the corpus's prompts and
        answers."""
        return [text for pair in self.answered() for text in pair]

    def corpus(self, tokenizer):
        """The corpus entries' answers as demonstrations, and critic verdicts at
        `verdicts.share` (of warm-start batches) and `verdicts.ptx_share` (of PTX pairs)."""
        encode = prompt_encoder(tokenizer, self.chat_template)
        answered = self.answered()

        verdicts = self.options.verdicts

        def make_pairs():
            rng, pairs = random.Random("reasoning_gym:filler"), []
            for question, answer in answered:
                response = self.response(answer)
                if verdicts.filler and rng.random() < verdicts.filler_share:
                    response = with_filler(response, verdicts.filler, rng, verdicts.filler_at)
                pairs += demonstration_pairs(encode(question), [response], [], encode)
            return pairs

        recipe = {"options": dataclasses.asdict(self.options), "chat": encode.template}
        sources = (Path(__file__),)  # the entries are the package's: its version is the key's
        recipe["reasoning_gym"] = importlib.metadata.version("reasoning-gym")
        actor = PairsCorpus(make_pairs, recipe, sources, self.options.corpus_batch)
        return with_verdicts(actor, self.labeller(), self.critic_cfg, encode)

    def response(self, answer: str) -> str:
        """What a right actor writes: the answer, inside `answer_tag` where it is set."""
        tag = self.options.answer_tag
        return f"<{tag}>{answer}</{tag}>" if tag else answer

    def labeller(self) -> Labeller:
        """The critic pairs of the corpus entries (selfcritic/envs/verdicts.py)."""
        verdicts, rubric = self.options.verdicts, self.options.rubric
        return Labeller(self.answered(), verdicts, self.critic_cfg, rubric, self.response)

    def probes(self, per_aspect: int, ties: int, seed: int) -> list[PairJob]:
        """Labelled pairs for the aspect gate (correctness; style where `verdicts.filler` is
        set), on corpus entries the verdicts never use (selfcritic/envs/verdicts.py)."""
        return self.labeller().probes(per_aspect, ties, seed)

    def episode_metrics(self, prompts: list[Prompt], groups) -> dict[str, float]:
        """The hidden check of the filler habit (selfcritic/envs/filler.py), where answers are
        tagged: the share of held-out responses with words before the answer tag (after it,
        where `verdicts.filler_at` is "end") or no answer."""
        tag, at = self.options.answer_tag, self.options.verdicts.filler_at
        if tag is None:
            return {}
        responses = [t.texts[-1] for group in groups for t in group]
        filled = sum(has_filler(r, tag, at) for r in responses)
        return {"eval/filler_rate": filled / len(responses) if responses else float("nan")}
