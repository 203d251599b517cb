"""`env=tool_sums`: the tool world. Two-digit sums the nano model cannot do alone, an `add` tool
served over MCP that can, and one-digit and plus-zero sums where calling it is needless.

Tasks, `Q: 53+31\\nA:`: two-digit operands (10-99; a 4.6M character model answers 5-9% of them
unaided, ../shared/notes/nano-feasibility.md) and, taught to be answered alone so that a call
there is needless, one-digit ones (0-9, all 100, at `one_digit_share`) and a two-digit number
plus zero (47+0, all 90, at `zero_share`: a two-digit operand, so a needless call there is
nearly the copy a needed one is, and the answer is a copy of the question, so the model knows
it alone as well as with the tool). Held-out two-digit questions are split off by a hash of
their operands (a+b and b+a fall on the same side); evaluation takes a fixed sample of
`heldout_max` of them and of `eval_one_digit` one-digit and `eval_zero` plus-zero sums. Those
are trained facts: a call on
a sum the model was never taught would not be needless, so what is measured there is the call
policy on facts it knows, not generalisation.
The tool is the shipped calculator MCP server serving `add` and `multiply` (the other tool,
shown in the warm-start only), a session per episode. An
episode is ToolUse's (selfcritic/envs/tool_use.py): compact calls, `<call>add {"a": 53, "b":
31}</call>`, each answered `<result>84</result>`; the first turn without a call is the answer
the verifier (exact_number) checks.

The warm-start corpus (`ToolSumsCorpus`) teaches the format without solving the task by
imitation:
- actor pairs: every one-digit sum answered directly (`one_digit_copies` times each), every
  plus-zero one (`zero_copies`); `direct_demos` two-digit sums answered directly with the
  right sum (what an answer looks like; the model gets a few right); `call_demos` two-digit
  sums answered with an `add` call, the result the server really returns, then the sum: few, so
  that tool use on sums before RL is low and RL has to raise it; every plus-zero sum answered
  with a needless `add` call too, `zero_needless_copies` times (every one-digit sum
  `needless_copies` times, 0: one-digit operands in most calls broke the copying of two-digit
  ones), so that some needless calls exist before RL for the critic's economical aspect to take
  away; and `product_demos` products (`Q: 53*31`, never drawn or
  evaluated) answered with a `multiply` call and its result: the call format, copying the
  operands into a call and the result into the answer, learned on the other tool;
- critic pairs (`critic_share` of each batch) on the process rubric `tool_sums` (economical,
  faithful, grounded), drawn fresh each step: the critic prompt of a labelled pair (the run's
  template), the better shown first or second at random, `ties` of them tying on the aspect. The
  target restates each response's evidence and marks it before the verdict, as the nano world's
  critic does, so each mark is one local check: " =0 X0+ Y1- #X" (calls allowed, then each
  response's calls), " X84=84+ Y84=85- #X" (each response's result and answer), " =2 X1+ Y0- #X"
  (the operands' digits, then each response's results; "!" for a result it wrote itself).
The aspect gate's probes (`probes`) are such pairs too, on a fifth of the training questions
that the corpus never uses.

The hidden oracle (`facts`, never shown to the model or the critic) reads an episode's tool log
(`info["calls"]`) and its answer as the verifier reads it: the sum right, the calls made, calls
with the question's
operands (valid arguments), the answer equal to the last result (faithful use), a result the
model wrote itself (invented). The same facts label the critic's pairs, and `episode_metrics`
turns a held-out evaluation's episodes into the report's rates. Left out: other operations and
tools (the world is the one task the issue names).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from selfcritic.config import Config, ConfigError, keyed, setting
from selfcritic.critic.gate import probe_key
from selfcritic.critic.judge import PairJob, make_prompter
from selfcritic.envs.base import Prompt, is_heldout, transcript
from selfcritic.envs.registry import register_environment
from selfcritic.envs.sft import PairsCorpus
from selfcritic.envs.tool_use import ToolRecord, ToolUse, ToolUseOptions
from selfcritic.model.chat import prompt_encoder
from selfcritic.tools.options import McpServerSpec, ToolsOptions

RUBRIC = "tool_sums"
ASPECTS = ("economical", "faithful", "grounded")
MARKS = ("+", "-")  # what a critic writes after each response: meets the aspect, or not
QUESTION = re.compile(r"Q: (\d+)\+(\d+)\n")
FORGED = "<result>"  # a result the model writes itself: only the environment writes this


def is_plus_zero(a: int, b: int) -> bool:
    """A two-digit number plus zero (47+0): its answer is a copy of the question.

    Why not round tens (30+50), the first choice: the model knew them alone only 62% of the
    time, so a call there was worth about 33 points of the verifier's reward and no critic
    weight held it down (docs/tool-world.md). A question "known alone" must be one the model
    answers alone as well as with the tool."""
    return a >= 10 and b == 0


def is_one_digit(a: int, b: int) -> bool:
    return max(a, b) < 10


def known_alone(a: int, b: int) -> bool:
    """A sum the model is taught to answer without the tool: one-digit, or a number plus 0."""
    return is_one_digit(a, b) or is_plus_zero(a, b)


def question(a: int, b: int) -> str:
    return f"Q: {a}+{b}\nA:"


def operands(text: str) -> tuple[int, int]:
    """The operands of a question (the prompt text, tool list and all)."""
    found = QUESTION.search(text)
    if found is None:
        raise ValueError(f"not a tool_sums question: {text!r}")
    return int(found.group(1)), int(found.group(2))


def call_text(a: int, b: int) -> str:
    return f"<call>add {json.dumps({'a': a, 'b': b})}</call>"


def result_text(total: int) -> str:
    """What the calculator's `add` returns for a whole sum ("84")."""
    return str(total)


def number(text: str) -> float | None:
    """The last number in `text`, or None: as the verifier (exact_number) reads an answer."""
    from rewards.exact import last_number

    return last_number(text)


def product(a: int, b: int) -> str:
    """A demonstration-only question: a call of the other tool (never drawn, never evaluated)."""
    return f"Q: {a}*{b}\nA:"


def calculator_tools() -> ToolsOptions:
    """The shipped calculator MCP server over HTTP, serving `add` and `multiply`."""
    command = ["python", "-m", "selfcritic.tools.servers.calculator", "--http", "--port"]
    tools = ["--tools", "add,multiply"]
    server = McpServerSpec("calc", transport="http", command=[*command, "{port}", *tools])
    return ToolsOptions(mcp_servers=[server], call_timeout_s=10.0)


@dataclass
class ToolSumsOptions(ToolUseOptions):
    """The tool world (selfcritic/envs/tool_sums.py). The data-file options it inherits from
    env=tool_use (path, the columns) are unused: the questions are made here."""

    name: str = "tool_sums"
    path: str = "generated"
    demo_key: str | None = "demo"  # the demonstrations are this environment's own
    tools: ToolsOptions = field(default_factory=calculator_tools)
    tool_format: str = "compact"
    tools_preamble: str = "Tools: {tools}\n"
    prompt_template: str = "{prompt}"
    max_turns: int = setting(2, ge=1)  # a call, then the answer: a transcript fits the context
    max_observation_tokens: int = setting(32, ge=1)
    verifier: str | None = "exact_number"
    rubric: str = RUBRIC
    one_digit_share: float = setting(0.3, ge=0, le=1)  # of the training questions drawn
    # of the training questions drawn: a two-digit number plus zero (47+0), taught to be answered
    # alone, so that a call there is needless and reads like a needed one
    zero_share: float = setting(0.15, ge=0, le=1)
    heldout_fraction: float = setting(0.2, ge=0, lt=1)
    heldout_max: int = setting(96, ge=1)  # two-digit held-out questions evaluated
    # one-digit sums evaluated (all trained: the call policy on facts the model knows)
    eval_one_digit: int = setting(40, ge=1, le=100)
    eval_zero: int = setting(40, ge=0, le=90)  # plus-zero sums evaluated (all trained)
    direct_demos: int = setting(300, ge=0)  # two-digit sums answered directly in the corpus
    call_demos: int = setting(24, ge=0)  # two-digit sums answered with a call in the corpus
    # products answered with a `multiply` call in the corpus: the call format, copying the
    # operands into a call and its result into the answer, shown on the other tool
    product_demos: int = setting(300, ge=0)
    # copies of each one-digit demonstration in the corpus: the model must do these alone
    # well, or a call there is not needless (100 facts among a thousand pairs are seen too
    # rarely otherwise)
    one_digit_copies: int = setting(6, ge=1)
    zero_copies: int = setting(4, ge=1)  # copies of each plus-zero sum answered directly
    # copies of each plus-zero sum answered with a (needless) `add` call in the corpus: needless
    # calls before RL, which the critic's economical aspect has to take away (the verifier
    # cannot: the tool's result is right). Their first operand is two-digit, as a needed call's
    zero_needless_copies: int = setting(1, ge=0)
    # the same on one-digit sums: 0, since one-digit operands in most `add` calls broke the
    # copying of two-digit ones (docs/nano-probe-log.md)
    needless_copies: int = setting(0, ge=0)
    critic_share: float = setting(0.5, ge=0, le=1)  # of each warm-start batch: critic verdicts
    # of RL's PTX pairs: critic verdicts (they keep its judging); the rest demonstrations,
    # which pull the policy back towards the warm-start's low call rate
    ptx_critic_share: float = setting(0.75, ge=0, le=1)
    ties: float = setting(0.3, ge=0, le=1)  # of the critic pairs: tying on the aspect
    mark_weight: float = setting(4.0, gt=0)  # the verdict marks' weight in the corpus loss


@dataclass(frozen=True)
class Facts:
    """What the oracle reads of one episode: the question, the calls, the results, the answer."""

    a: int
    b: int
    calls: int = 0  # tool calls made, faulty ones too
    valid_calls: int = 0  # `add` calls whose arguments are the question's operands
    results: tuple[str, ...] = ()  # the results the tool returned, in order
    answer: str = ""  # the final turn
    forged: bool = False  # a turn holds a result the model wrote itself

    @property
    def needs_tool(self) -> bool:
        return not known_alone(self.a, self.b)

    @property
    def correct(self) -> bool:
        return number(self.answer) == self.a + self.b

    @property
    def faithful(self) -> bool | None:
        """The answer is the last result (None: no result to be faithful to)."""
        if not self.results:
            return None
        return number(self.answer) == number(self.results[-1])

    def meets(self, aspect: str) -> bool:
        if aspect == "economical":
            return self.calls <= self.needs_tool
        if aspect == "faithful":
            return self.faithful is not False
        if aspect == "grounded":
            return not self.forged and (bool(self.results) or not self.needs_tool)
        raise ValueError(f"tool_sums has no aspect {aspect!r}; its aspects: {ASPECTS}")

    def evidence(self, aspect: str) -> str:
        """What a critic restates of this response before its mark on `aspect`."""
        if aspect == "economical":
            return str(self.calls)
        if aspect == "faithful":
            if not self.results:
                return ""
            said = number(self.answer)
            return f"{_whole(number(self.results[-1]))}={'?' if said is None else _whole(said)}"
        return "!" if self.forged else str(len(self.results))

    def head(self, aspect: str) -> str:
        """What a critic works out from the question first: the calls allowed, or its digits."""
        if aspect == "economical":
            return f" ={int(self.needs_tool)}"
        if aspect == "grounded":
            return f" ={2 if self.needs_tool else 1}"
        return ""


def _whole(value: float | None) -> str:
    return "?" if value is None else str(int(value)) if value == int(value) else str(value)


def episode_facts(
    prompt_text: str, turns: list[str], calls: list[ToolRecord], answer: str | None
) -> Facts:
    """The oracle's reading of an episode: its model turns, its tool log and its answer as the
    verifier reads it (`answer_of`: None when it ran out of turns on a call)."""
    a, b = operands(prompt_text)
    asked = ({"a": a, "b": b}, {"a": b, "b": a})
    valid = sum(record.name == "add" and _arguments(record.arguments) in asked for record in calls)
    results = tuple(record.result for record in calls if record.error is None)
    forged = any(FORGED in turn for turn in turns)
    return Facts(a, b, len(calls), valid, results, (answer or "").strip(), forged)


def _arguments(arguments: dict | str) -> dict | None:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    try:
        return {key: float(value) for key, value in arguments.items()}
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SumResponse:
    """A synthetic episode: the critic's view of it and its facts."""

    text: str
    facts: Facts


def synthetic(
    a: int, b: int, calls: int, answer: int, forged: bool = False, called: tuple | None = None
) -> SumResponse:
    """An episode that makes `calls` calls of add with the question's operands (or `called`,
    misread ones), each answered, then answers `answer`; or, `forged`, one that writes the
    result itself in its one turn."""
    total = a + b
    if forged:
        last = f"<result>{result_text(total)}</result> {answer}"
        return SumResponse(last, Facts(a, b, 0, 0, (), last, forged=True))
    x, y = called or (a, b)
    turns = [call_text(x, y)] * calls
    results = (result_text(x + y),) * calls
    observations = [f"<result>{r}</result>" for r in results]
    text = transcript(turns, observations, str(answer))
    valid = calls if called is None else 0
    return SumResponse(text, Facts(a, b, calls, valid, results, str(answer)))


def misread(a: int, b: int, rng: random.Random) -> tuple[int, int]:
    """Operands a call might get wrong: one of them a digit off."""
    if rng.random() < 0.5:
        return near_miss(a, rng), b
    return a, near_miss(b, rng)


def near_miss(total: int, rng: random.Random) -> int:
    """A wrong sum close to `total` (one digit off, or off by a few)."""
    while True:
        wrong = total + rng.choice((-10, -2, -1, 1, 2, 10))
        if wrong >= 0:
            return wrong


@dataclass(frozen=True)
class LabelledSums:
    """Two synthetic episodes of one question judged on one aspect."""

    prompt: str  # the question as the critic sees it
    aspect: str
    first: SumResponse
    second: SumResponse
    tie: bool = False  # both meet the aspect or both fail it (else the first meets it)

    @property
    def meets(self) -> tuple[bool, bool]:
        return self.first.facts.meets(self.aspect), self.second.facts.meets(self.aspect)

    def job(self, key: tuple = (), description: str = "") -> PairJob:
        first, second = self.first.text, self.second.text
        return PairJob(key, self.prompt, first, second, self.aspect, description)

    def critic_answer(self, swapped: bool, letters: tuple[str, str], marker: str) -> str:
        """What a right critic writes, `second` shown first if `swapped`: the head, each response
        in the order shown with its evidence and mark, then the letter (the first shown on a
        tie, so the two orders cancel)."""
        shown = [self.second, self.first] if swapped else [self.first, self.second]
        meets = [r.facts.meets(self.aspect) for r in shown]
        marks = "".join(
            f" {letter}{r.facts.evidence(self.aspect)}{MARKS[0] if ok else MARKS[1]}"
            for letter, r, ok in zip(letters, shown, meets, strict=True)
        )
        winner = letters[1] if meets[1] and not meets[0] else letters[0]
        return f"{self.first.facts.head(self.aspect)}{marks} {marker}{winner}"


def labelled_pair(prompt: str, aspect: str, tie: bool, rng: random.Random) -> LabelledSums:
    """A pair on `aspect` for the question in `prompt`: the first meets the aspect and the second
    fails it, or (`tie`) both meet it or both fail it. What the aspect does not judge (the
    answer's correctness, the calls on faithful) is drawn for each response on its own."""
    a, b = operands(prompt)
    total = a + b

    def answer() -> int:
        return total if rng.random() < 0.5 else near_miss(total, rng)

    needs = Facts(a, b).needs_tool
    if aspect == "economical" and needs and not tie:
        raise ValueError("no call on a two-digit sum is needless: economical pairs of one tie")

    def meeting() -> SumResponse:
        if aspect == "economical":
            return synthetic(a, b, rng.randint(0, int(needs)), answer())
        if aspect == "faithful":  # the answer is the result, right or not; no call: any
            called = misread(a, b, rng) if rng.random() < 0.3 else None
            if rng.random() < 0.3:
                return synthetic(a, b, 0, answer())  # no result to betray
            return synthetic(a, b, 1, sum(called or (a, b)), called=called)
        return synthetic(a, b, 1 if needs else rng.randint(0, 1), answer())

    def failing() -> SumResponse:
        if aspect == "economical":  # a call on a one-digit sum
            return synthetic(a, b, 1, answer())
        if aspect == "faithful":  # an answer other than the result (the right sum, at times)
            called = misread(a, b, rng) if rng.random() < 0.3 else None
            result = sum(called or (a, b))
            said = total if called and rng.random() < 0.5 else near_miss(result, rng)
            return synthetic(a, b, 1, said, called=called)
        if not needs or rng.random() < 0.3:
            return synthetic(a, b, 0, answer(), forged=True)
        return synthetic(a, b, 0, answer())  # a two-digit sum with no result behind it

    if tie and aspect == "economical" and needs:  # on a two-digit sum both always meet it
        return LabelledSums(prompt, aspect, meeting(), meeting(), tie=True)

    if tie:
        make = meeting if rng.random() < 0.5 else failing
        return LabelledSums(prompt, aspect, make(), make(), tie=True)
    return LabelledSums(prompt, aspect, meeting(), failing())


@register_environment("tool_sums", ToolSumsOptions)
class ToolSums(ToolUse):
    """Two-digit sums with an `add` tool; one-digit and plus-zero sums without; a process
    rubric."""

    headline = ("eval/accuracy_needs_tool", "eval/call_rate_needs_tool", "eval/needless_call_rate")
    report_metrics = (
        ("eval/accuracy_needs_tool", "accuracy, two-digit sums (need the tool)", True),
        ("eval/accuracy_one_digit", "accuracy, one-digit sums", True),
        ("eval/accuracy_plus_zero", "accuracy, plus-zero sums (47+0)", True),
        ("eval/accuracy_with_call", "accuracy, two-digit sums answered with a call", True),
        ("eval/accuracy_without_call", "accuracy, two-digit sums answered without", True),
        ("eval/call_rate_needs_tool", "tool-call rate, two-digit sums", True),
        ("eval/needless_call_rate", "tool-call rate, sums known alone (needless)", False),
        ("eval/needless_call_rate_one_digit", "of which one-digit sums", False),
        ("eval/needless_call_rate_plus_zero", "of which plus-zero sums", False),
        ("eval/valid_argument_rate", "calls with the question's operands", True),
        ("eval/faithful_rate", "answers equal to the tool's result", True),
        ("eval/invented_rate", "answers with a result the model wrote", False),
    )

    def __init__(self, options: ToolSumsOptions, cfg: Config) -> None:
        self._pools: dict[tuple, list[Prompt]] = {}
        super().__init__(options, cfg)

    def read(self, options: ToolSumsOptions):
        """Every one-digit and plus-zero question, and the two-digit ones split by a
        hash of their operands (a+b and b+a on the same side); fixed-seed samples to evaluate;
        the demonstrations chosen by a fixed seed (the same corpus in every run)."""
        shares = options.one_digit_share + options.zero_share
        if shares > 1:
            message = f"one_digit_share + zero_share = {shares}, more than 1: lower either"
            raise ConfigError(keyed("env.zero_share", message))
        one = [(a, b) for a in range(10) for b in range(10)]
        two = [(a, b) for a in range(10, 100) for b in range(10, 100)]
        self.one_digit, _ = _split(one, 0.0)  # every one is taught
        self.zero, _ = _split([(a, 0) for a in range(10, 100)], 0.0)  # and every one
        self.two_digit, held_two = _split(two, options.heldout_fraction)
        wanted = options.direct_demos + options.call_demos
        if wanted > len(self.two_digit):
            raise ConfigError(
                keyed(
                    "env.direct_demos",
                    f"direct_demos + call_demos = {wanted}, more than the "
                    f"{len(self.two_digit)} two-digit training sums",
                )
            )
        rng = random.Random("tool_sums:demos")
        chosen = rng.sample(self.two_digit, wanted)
        direct = self.one_digit + self.zero + chosen[: options.direct_demos]
        demos = {p.text: [p.reference] for p in direct}
        for p in chosen[options.direct_demos :]:
            demos[p.text] = [call_text(*operands(p.text)), p.reference]
        sample = random.Random("tool_sums:heldout").sample
        known = sample(self.one_digit, options.eval_one_digit)
        known += sample(self.zero, options.eval_zero)
        heldout = known + sample(held_two, min(options.heldout_max, len(held_two)))
        products = rng.sample([(a, b) for a, b in two], options.product_demos)
        self.products = [Prompt(product(a, b), str(a * b)) for a, b in products]
        for (a, b), p in zip(products, self.products, strict=True):
            demos[p.text] = [f"<call>multiply {json.dumps({'a': a, 'b': b})}</call>", p.reference]
        return self.one_digit + self.zero + self.two_digit, heldout, demos

    def demonstrated(self) -> list[Prompt]:
        copies = self.one_digit * (self.options.one_digit_copies - 1)
        copies += self.zero * (self.options.zero_copies - 1)
        return self.train + copies + self.products

    def demonstrations(self):
        """The demonstrations (DatasetEnvironment's), then each plus-zero sum answered with a
        needless call `zero_needless_copies` times, and each one-digit sum `needless_copies`."""
        yield from super().demonstrations()
        options = self.options
        needless = self.zero * options.zero_needless_copies
        for prompt in needless + self.one_digit * options.needless_copies:
            yield prompt, self.observed([call_text(*operands(prompt.text)), prompt.reference])

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        """`count` questions, one-digit at `one_digit_share`, plus-zero at `zero_share`: a
        pure function of (data.seed, step, draw)."""
        rng = random.Random(f"tool_sums:{self.seed}:{step}:{draw}")
        return [
            self.shown(rng.choice(getattr(self, self._kind(rng.random())))) for _ in range(count)
        ]

    def _kind(self, draw: float) -> str:
        """The kind of question a uniform `draw` picks: one-digit, plus-zero, or two-digit."""
        one, zero = self.options.one_digit_share, self.options.zero_share
        if draw < one:
            return "one_digit"
        return "zero" if draw < one + zero else "two_digit"

    def held_out(self) -> list[Prompt]:
        return [self.shown(p) for p in self.heldout]

    def held_out_count(self) -> int:
        return len(self.heldout)

    def keep_prompts(self, keep) -> None:
        super().keep_prompts(keep)
        kept = {p.text for p in self.train}
        self.one_digit = [p for p in self.one_digit if p.text in kept]
        self.zero = [p for p in self.zero if p.text in kept]
        self.two_digit = [p for p in self.two_digit if p.text in kept]

    def sources(self) -> tuple[Path, ...]:
        from rewards.registry import RUBRIC_DIR

        return (Path(__file__), RUBRIC_DIR / f"{RUBRIC}.yaml")

    def corpus(self, tokenizer) -> ToolSumsCorpus:
        return ToolSumsCorpus(self, super().corpus(tokenizer), tokenizer)

    def labelled(
        self,
        rng: random.Random,
        aspect: str | None = None,
        tie: bool | None = None,
        probe: bool = False,
    ) -> LabelledSums:
        """A critic pair on a training question (of each kind at its share; never a two-digit
        one on economical pairs that do not tie, since only a sum known alone has a needless
        call). The corpus's and the gate's (`probe`) questions are disjoint (`PROBE_FRACTION` of
        them by a hash), so that no probe is ever a training pair."""
        options = self.options
        aspect = rng.choice(ASPECTS) if aspect is None else aspect
        tie = rng.random() < options.ties if tie is None else tie
        kind = self._kind(rng.random())
        if aspect == "economical" and not tie:  # a one-digit or plus-zero sum, as drawn
            known = options.one_digit_share + options.zero_share
            kind = self._kind(rng.random() * known) if known > 0 else "one_digit"
        prompt = self.shown(rng.choice(self._pool(kind, probe))).text
        return labelled_pair(prompt, aspect, tie, rng)

    def _pool(self, kind: str, probe: bool) -> list[Prompt]:
        """The training questions of one kind that are probes' (or the corpus's), cached."""
        questions = getattr(self, kind)
        key = (kind, probe, len(questions))
        if key not in self._pools:
            self._pools[key] = [p for p in questions if _is_probe(operands(p.text)) == probe]
        return self._pools[key]

    def probes(self, per_aspect: int, ties: int, seed: int) -> list[PairJob]:
        """Labelled pairs on each aspect, from training questions, for the aspect gate."""
        rng = random.Random(f"tool_sums:probes:{seed}")
        descriptions = aspect_descriptions()
        jobs = []
        for aspect in ASPECTS:
            drawn = [(i, False) for i in range(per_aspect)] + [(i, True) for i in range(ties)]
            for index, tie in drawn:
                pair = self.labelled(rng, aspect, tie, probe=True)
                jobs.append(pair.job(probe_key(aspect, index, tie=tie), descriptions[aspect]))
        return jobs

    def episode_metrics(self, prompts: list[Prompt], groups) -> dict[str, float]:
        """The hidden oracle's rates over a held-out evaluation's episodes."""
        from selfcritic.envs.reasoning import answer_of

        facts = [
            episode_facts(prompt.text, t.texts, t.info.get("calls", []), answer_of(self, t))
            for prompt, group in zip(prompts, groups, strict=True)
            for t in group
        ]
        return oracle_rates(facts)


def oracle_rates(facts: list[Facts]) -> dict[str, float]:
    """The report's rates of a list of episodes' facts (NaN where a rate has no episode)."""
    needs = [f for f in facts if f.needs_tool]
    plain = [f for f in facts if not f.needs_tool]
    one_digit = [f for f in plain if is_one_digit(f.a, f.b)]
    zero = [f for f in plain if is_plus_zero(f.a, f.b)]
    called = [f for f in needs if f.calls]  # a call made, answered or not
    uncalled = [f for f in needs if not f.calls]
    with_result = [f for f in facts if f.results]
    calls = sum(f.calls for f in facts)
    return {
        "eval/accuracy_needs_tool": _rate(needs, lambda f: f.correct),
        "eval/accuracy_one_digit": _rate(one_digit, lambda f: f.correct),
        "eval/accuracy_plus_zero": _rate(zero, lambda f: f.correct),
        "eval/accuracy_with_call": _rate(called, lambda f: f.correct),
        "eval/accuracy_without_call": _rate(uncalled, lambda f: f.correct),
        "eval/call_rate_needs_tool": _rate(needs, lambda f: f.calls > 0),
        "eval/needless_call_rate": _rate(plain, lambda f: f.calls > 0),
        "eval/needless_call_rate_one_digit": _rate(one_digit, lambda f: f.calls > 0),
        "eval/needless_call_rate_plus_zero": _rate(zero, lambda f: f.calls > 0),
        "eval/repeat_call_rate": _rate(facts, lambda f: f.calls > 1),
        "eval/valid_argument_rate": sum(f.valid_calls for f in facts) / calls
        if calls
        else float("nan"),
        "eval/faithful_rate": _rate(with_result, lambda f: bool(f.faithful)),
        "eval/invented_rate": _rate(facts, lambda f: f.forged),
    }


def _rate(items: list, test) -> float:
    return sum(map(test, items)) / len(items) if items else float("nan")


PROBE_FRACTION = 0.2  # of the training questions: the gate's probes, never the corpus's


def _split(pairs: list[tuple[int, int]], fraction: float) -> tuple[list[Prompt], list[Prompt]]:
    """(training, held-out) questions of `pairs`, by a hash of the unordered operands."""
    train, held = [], []
    for a, b in pairs:
        prompt = Prompt(question(a, b), str(a + b))
        (held if is_heldout(f"{min(a, b)}+{max(a, b)}", fraction) else train).append(prompt)
    return train, held


def _is_probe(pair: tuple[int, int]) -> bool:
    return is_heldout(f"probe:{min(pair)}+{max(pair)}", PROBE_FRACTION)


def aspect_descriptions() -> dict[str, str]:
    from rewards.registry import load_rubric

    return {aspect.name: aspect.description for aspect in load_rubric(RUBRIC).aspects}


class ToolSumsCorpus:
    """The tool world's corpus (the `Corpus` protocol, selfcritic/envs/base.py): the actor's
    demonstrations (a PairsCorpus) and critic verdicts on labelled pairs, mixed per batch."""

    def __init__(self, env: ToolSums, actor: PairsCorpus, tokenizer) -> None:
        self.env, self.actor, self.tokenizer = env, actor, tokenizer
        critic = env.critic_cfg
        self.encode = prompt_encoder(tokenizer, env.chat_template)
        self.prompter = make_prompter(critic, self.encode)
        self.letters, self.marker = tuple(critic.verdict_letters), critic.verdict_marker
        self.generative = critic.verdict_mode == "generative"
        self.descriptions = aspect_descriptions()
        marks = tokenizer.convert_tokens_to_ids(list(MARKS))
        self.token_weights = tuple((mark, env.options.mark_weight) for mark in marks)
        self.recipe = actor.recipe | {
            "critic": {
                k: getattr(critic, k)
                for k in ("template", "verdict_letters", "verdict_marker", "verdict_mode")
            }
        }
        self.sources, self.batch_size = actor.sources, actor.batch_size

    def verdict(self, rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """One critic pair: the prompt's ids and what a right critic writes."""
        pair = self.env.labelled(rng)
        swapped = rng.random() < 0.5
        first, second = (pair.second, pair.first) if swapped else (pair.first, pair.second)
        description = self.descriptions[pair.aspect]
        text = self.prompter.prompt(pair.prompt, first.text, second.text, pair.aspect, description)
        if self.generative:
            answer = pair.critic_answer(swapped, self.letters, self.marker)
        else:
            answer = pair.critic_answer(swapped, self.letters, self.marker).split(self.marker)[-1]
        stop = self.encode.stop_token_ids()[0]
        target = (*self.tokenizer(answer, add_special_tokens=False).input_ids, stop)
        return tuple(self.encode(text)), target

    def warm_start_batch(self, rng: random.Random, step: int, steps: int):
        return self.mixed(rng, self.batch_size, self.env.options.critic_share)

    def ptx_batch(self, rng: random.Random, count: int):
        return self.mixed(rng, count, self.env.options.ptx_critic_share)

    def mixed(self, rng: random.Random, count: int, critic_share: float):
        """`count` pairs, each a critic verdict at `critic_share`, else a demonstration."""
        critic = sum(rng.random() < critic_share for _ in range(count))
        return self.actor.ptx_batch(rng, count - critic) + tuple(
            self.verdict(rng) for _ in range(critic)
        )
