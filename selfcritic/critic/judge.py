"""One batched engine call that judges pairs of texts on aspects, in both orders.

A `PairJob` names two responses to one question and an aspect. `judge` builds both orders' critic
prompts for every job, sorts all prompts by their token ids (prompts that share a question and a
first response become neighbours, so the engine's prefix cache serves their common prefix), sends
them in one call, and reads each answer back as P(X wins):
- probability mode: one token restricted to the two verdict letters with their top logprobs:
  P(X) = e^lx / (e^lx + e^ly), no decoding and no parser;
- generative mode: `critic.max_tokens` tokens at `critic.temperature` (greedy by default; never the
  policy's temperature), parsed by `parse_generative`: X -> 1, Y -> 0, anything else invalid.
Left out: aggregation and what the verdicts are for (callers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from selfcritic.config import CriticConfig
from selfcritic.critic.aggregate import pair_outcome
from selfcritic.critic.prompts import (
    CUT_MARK,
    CriticPrompter,
    critic_template,
    parse_generative,
    template_delimiters,
    verdict_instruction,
)
from selfcritic.model.chat import prompt_encoder  # noqa: F401 (callers import it from here)
from selfcritic.rollout.types import Sample, SamplingSpec


def verdict_token_ids(tokenizer, letters) -> tuple[int, int]:
    """The single-token ids of the verdict letters; a tokenizer that splits them is refused."""
    ids = [tokenizer(letter, add_special_tokens=False).input_ids for letter in letters]
    if any(len(i) != 1 for i in ids):
        raise ValueError(
            f"critic.verdict_letters {list(letters)} must be one token each, got ids {ids}"
        )
    return ids[0][0], ids[1][0]


@dataclass(frozen=True)
class PairJob:
    """`first` vs `second` (texts) on `aspect`; `key` is the caller's handle for the result."""

    key: tuple
    question: str
    first: str
    second: str
    aspect: str
    description: str = ""


@dataclass(frozen=True)
class Judged:
    """A job's verdicts: P(X wins) with `first` shown as X (forward) and as Y (backward)."""

    job: PairJob
    forward: float | None  # None: invalid
    backward: float | None
    forward_answer: Sample
    backward_answer: Sample
    # set by `Judge.resolve_invalid` on a pair still invalid when judged again: the outcome for
    # `first` the rule forced (0: first held a forgery, 1: second did), or dropped
    forced: float | None = None
    dropped: bool = False
    rejudged: bool = False  # its verdicts are those of the sanitised second judgement
    skipped: bool = False  # its prompt cannot fit the context even with empty responses: not
    # judged, no outcome (counted: critic/skipped_too_long)

    @property
    def first_judgement_valid(self) -> bool:
        """Both orders valid at the first judgement (what consistency metrics measure)."""
        return self.valid and not self.rejudged

    @property
    def valid(self) -> bool:
        return self.forward is not None and self.backward is not None

    @property
    def outcome(self) -> float:
        """For `first`: the mean of its win probabilities over both orders (0.5 if invalid)."""
        return pair_outcome(self.forward, self.backward)

    @property
    def reward_outcome(self) -> float | None:
        """The outcome the reward uses: forced where the invalid rule decided, None where it
        dropped the pair, else `outcome`."""
        if self.dropped or self.skipped:
            return None
        return self.forced if self.forced is not None else self.outcome


def make_prompter(cfg: CriticConfig, encode) -> CriticPrompter:
    """The critic's prompter for the tokenizer behind `encode` (a `PromptEncoder`, or any text
    -> ids callable: no chat template then): its template, delimiters and instruction."""
    template = critic_template(cfg.template, getattr(encode, "chat", False))
    special = encode.special_texts() if hasattr(encode, "special_texts") else ()
    marker = cfg.verdict_marker if cfg.verdict_mode == "generative" else ""
    letters = tuple(cfg.verdict_letters)
    return CriticPrompter(
        template=template,
        letters=letters,
        flatten_newlines=cfg.flatten_newlines,
        delimiters=(*template_delimiters(template, cfg.delimiters), *special),
        marker=marker,
        instruction=verdict_instruction(letters, marker),
    )


_NOT_SENT = Sample((), (), "", (), "skipped", -1)  # the answer of a prompt that was not sent


def cut_job(job: PairJob, length: int) -> PairJob:
    """`job` with each response longer than `length` characters cut to them, its middle left
    out and marked: the beginning and the end are kept (a transcript's final answer, an
    answer's conclusion)."""

    def cut(text: str) -> str:
        if len(text) <= length:
            return text
        head = (length + 1) // 2
        return text[:head] + CUT_MARK + text[len(text) - (length - head) :]

    return dataclasses.replace(job, first=cut(job.first), second=cut(job.second))


def forged_outcome(first_forged: bool, second_forged: bool) -> float | None:
    """A pair invalid even when judged sanitised: the response that held a forgery (a
    delimiter or the verdict marker) loses; with both or neither, no outcome (dropped)."""
    if first_forged == second_forged:
        return None
    return 0.0 if first_forged else 1.0


@dataclass
class JudgeCall:
    judged: list[Judged]
    prompt_tokens: int
    completion_tokens: int


class Judge:
    """Critic prompts in, verdicts out; `encode` turns text into prompt ids (with BOS)."""

    def __init__(
        self,
        cfg: CriticConfig,
        encode: Callable[[str], list[int]],
        verdict_ids: tuple[int, int],
        context_len: int | None = None,
    ) -> None:
        """`context_len`: the engines' context (rollout.max_model_len); a critic prompt that
        would leave no room for the answer has its responses cut (`encode_pair`). `encode` is a
        `PromptEncoder` (or any text -> ids callable: then no chat template is assumed)."""
        self.cfg, self.encode, self.verdict_ids = cfg, encode, verdict_ids
        answer = 1 if cfg.verdict_mode == "probability" else cfg.max_tokens
        self.max_prompt_tokens = None if context_len is None else context_len - answer
        self.cut_prompts = 0  # prompts whose responses were cut to fit, so far
        self.skipped_too_long = 0  # prompts that cannot fit even with empty responses, so far
        self.prompter = make_prompter(cfg, encode)

    def spec(self) -> SamplingSpec:
        if self.cfg.verdict_mode == "probability":
            return SamplingSpec(
                n=1,
                temperature=1.0,
                max_tokens=1,
                allowed_token_ids=self.verdict_ids,
                top_logprobs=2,
            )
        chat = getattr(self.encode, "chat", False)
        return SamplingSpec(  # the verdict is read from the text: no logprobs needed
            n=1,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            # a chat model reasons over lines and ends its turn; a compact one ends at a newline
            stop=() if chat else ("\n",),
            stop_token_ids=self.encode.turn_stop_ids() if chat else (),
            logprobs=False,
        )

    def prompt_text(self, job: PairJob, swapped: bool) -> str:
        first, second = (job.second, job.first) if swapped else (job.first, job.second)
        return self.prompter.prompt(job.question, first, second, job.aspect, job.description)

    def encode_pair(self, job: PairJob, swapped: bool) -> list[int] | None:
        """The critic prompt's ids. One longer than `max_prompt_tokens` has each response longer
        than the cut length cut to it and marked (CUT_MARK), the cut length the most characters
        that fit (a binary search: tokenizers cut at no fixed ratio of characters); counted in
        `cut_prompts`. None (counted in `skipped_too_long`) when even empty responses leave no
        room: the question and the template alone pass the context."""
        ids = self.encode(self.prompt_text(job, swapped))
        limit = self.max_prompt_tokens
        if limit is None or len(ids) <= limit:
            return ids
        fits, low, high = None, 0, max(len(job.first), len(job.second))
        while low <= high:
            middle = (low + high) // 2
            candidate = self.encode(self.prompt_text(cut_job(job, middle), swapped))
            if len(candidate) <= limit:
                fits, low = candidate, middle + 1
            else:
                high = middle - 1
        self.cut_prompts += fits is not None
        self.skipped_too_long += fits is None
        return fits

    def read(self, answer: Sample) -> float | None:
        """P(X wins) from one critic answer; None when it holds no verdict."""
        if self.cfg.verdict_mode != "probability":
            letter = parse_generative(answer.text, self.prompter.letters, self.cfg.verdict_marker)
            return None if letter is None else float(letter == self.prompter.letters[0])
        if not answer.top_logprobs:
            return None
        x, y = (answer.top_logprobs[0].get(token) for token in self.verdict_ids)
        if x is None or y is None:
            return None
        return 1 / (1 + math.exp(y - x))

    def judge(self, jobs: list[PairJob], engine, seed: int | None = None) -> JudgeCall:
        """Every job in both orders through `engine.generate`, in one call; a job whose prompt
        cannot fit (`encode_pair`) is not sent and comes back `skipped`."""
        prompts = [self.encode_pair(job, swapped) for job in jobs for swapped in (False, True)]
        sent = [i for i, p in enumerate(prompts) if p is not None and prompts[i ^ 1] is not None]
        order = sorted(sent, key=lambda i: prompts[i])
        answers = (
            engine.generate(
                [prompts[i] for i in order], dataclasses.replace(self.spec(), seed=seed)
            )
            if order
            else []
        )
        by_prompt: list[list[Sample]] = [[_NOT_SENT]] * len(prompts)
        for position, index in enumerate(order):
            by_prompt[index] = answers[position]
        judged = [
            Judged(
                job,
                self.read(by_prompt[2 * i][0]),
                self.read(by_prompt[2 * i + 1][0]),
                by_prompt[2 * i][0],
                by_prompt[2 * i + 1][0],
                skipped=by_prompt[2 * i][0] is _NOT_SENT,
            )
            for i, job in enumerate(jobs)
        ]
        return JudgeCall(
            judged,
            prompt_tokens=sum(len(prompts[i]) for i in sent),
            completion_tokens=sum(len(s.completion_ids) for a in answers for s in a),
        )

    def resolve_invalid(
        self, judged: list[Judged], engine, seed: int | None = None
    ) -> tuple[list[Judged], dict[str, float]]:
        """Invalid verdicts never better than losing: each pair with an invalid order is judged
        again with both responses sanitised; one still invalid is decided by `forged_outcome`
        on the raw responses. Returns the pairs and the counts (critic/rejudged, .../forged,
        .../dropped_pairs)."""
        invalid = [i for i, item in enumerate(judged) if not item.valid and not item.skipped]
        counts = {"critic/rejudged": float(len(invalid))}
        if not invalid:
            return judged, counts | {"critic/forged": 0.0, "critic/dropped_pairs": 0.0}
        clean = [
            dataclasses.replace(
                judged[i].job,
                first=self.prompter.sanitise(judged[i].job.first),
                second=self.prompter.sanitise(judged[i].job.second),
            )
            for i in invalid
        ]
        again = self.judge(clean, engine, seed).judged
        resolved, forged, dropped = list(judged), 0, 0
        for i, retry in zip(invalid, again, strict=True):
            job = judged[i].job
            if retry.valid:
                resolved[i] = dataclasses.replace(retry, job=job, rejudged=True)
                continue
            forced = forged_outcome(
                bool(self.prompter.forgeries(job.first)), bool(self.prompter.forgeries(job.second))
            )
            forged, dropped = forged + (forced is not None), dropped + (forced is None)
            resolved[i] = dataclasses.replace(judged[i], forced=forced, dropped=forced is None)
        return resolved, counts | {
            "critic/forged": float(forged),
            "critic/dropped_pairs": float(dropped),
        }

    def sample(
        self, jobs: list[PairJob], engine, n: int, temperature: float, seed=None, logprobs=True
    ):
        """`n` sampled verdicts per job and order (the RL form of calibration): a list of
        (job, swapped, samples), `samples` carrying their tokens (and, with `logprobs`, their
        sampling logprobs)."""
        base = self.spec()  # no allowed-token restriction: the learner's logprobs are over the
        # whole vocabulary, so the sampled ones must be too (a non-letter is simply wrong)
        spec = SamplingSpec(
            n=n,
            temperature=temperature,
            max_tokens=base.max_tokens,
            stop=base.stop,
            stop_token_ids=base.stop_token_ids,
            seed=seed,
            logprobs=logprobs,
        )
        keys = [(job, swapped) for job in jobs for swapped in (False, True)]
        encoded = [self.encode_pair(job, swapped) for job, swapped in keys]
        keys = [key for key, ids in zip(keys, encoded, strict=True) if ids is not None]
        prompts = [ids for ids in encoded if ids is not None]
        answers = engine.generate(prompts, spec) if prompts else []
        return [(job, swapped, group) for (job, swapped), group in zip(keys, answers, strict=True)]

    def verdict_cue(self, answer_text: str) -> str:
        """What precedes the verdict letter in an answer: nothing in probability mode; in
        generative mode the rationale and marker the critic wrote, or the bare marker when its
        answer held no single marker (a calibration example then trains the verdict right after
        it)."""
        if self.cfg.verdict_mode == "probability":
            return ""
        marker = self.cfg.verdict_marker
        if answer_text.count(marker) != 1:
            return marker
        return answer_text.split(marker, 1)[0] + marker

    def letter_of(self, sample: Sample) -> str | None:
        """The verdict letter a sampled critic answer gives, or None."""
        if self.cfg.verdict_mode == "probability":
            return sample.text if sample.text in self.prompter.letters else None
        return parse_generative(sample.text, self.prompter.letters, self.cfg.verdict_marker)
