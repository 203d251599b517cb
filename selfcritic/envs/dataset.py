"""`env=dataset`: prompts from the user's own data file, read with Hugging Face `datasets`.

A file is a .jsonl, .json, .csv or .parquet file, or a directory written by `datasets`'
`save_to_disk` (a Dataset, or a DatasetDict whose splits `split` and `heldout_split` name).
Columns map onto a `Prompt`: `prompt_key` (required in every row), `reference_key` (a row
without one is rubric-only), and optionally `rubric_key` (a rubric per row) and `budget_key`
(a token budget per row) and `system_key` (a system prompt per row; `system_prompt` gives one
to every row without). `prompt_template` shapes the text of the user turn ("{prompt}"); the
trainer renders it with the tokenizer's chat template (`data.chat_template`).

The held-out split is `heldout_split` (a split of a saved DatasetDict), or `heldout_path` (a
second file), or else a `heldout_fraction` of the rows chosen by a hash of each prompt's text
(the same split in every run, whatever the row order). Training draws walk the training rows in
a seeded permutation per epoch, so every row is seen once per epoch and a resumed run draws the
same prompts (`data.seed`).

Bad data fails when the environment is built (the preflight builds it, before any work), naming
the file, the row and the column: a missing file or column, an empty file, a row without a
prompt, text that is not UTF-8. `max_rows` bounds the rows read and held: each becomes a Prompt
in memory (`datasets` itself memory-maps its Arrow cache). Left out: streaming.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from selfcritic.config import Config, ConfigError, keyed, setting
from selfcritic.critic.judge import PairJob
from selfcritic.envs.base import Prompt, SingleTurn, is_heldout
from selfcritic.envs.reasoning import check_tags
from selfcritic.envs.registry import register_environment
from selfcritic.envs.sft import PairsCorpus, demonstration_pairs
from selfcritic.envs.verdicts import Labeller, VerdictOptions, with_verdicts
from selfcritic.model.chat import prompt_encoder

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_FORMATS = (".jsonl", ".json", ".csv")


@dataclass
class DatasetOptions:
    """The user's data (selfcritic/envs/dataset.py)."""

    name: str = "dataset"
    # a .jsonl/.json/.csv/.parquet file, a `save_to_disk` directory, or "package:RESOURCE" (a
    # file shipped in a Python package, e.g. "selfcritic.envs:data/calculator.jsonl")
    path: str = "???"
    prompt_key: str = "prompt"  # the column of the prompts (every row needs one)
    reference_key: str | None = "reference"  # the column of the answers; None: rubric only
    rubric_key: str | None = None  # a column naming each row's rubric
    budget_key: str | None = None  # a column of each row's token budget
    system_key: str | None = None  # a column of each row's system prompt
    system_prompt: str | None = None  # the system prompt of rows without their own
    # a column of demonstrations for the warm-start and PTX (selfcritic/envs/sft.py): a string
    # (the response), or a list of a tool episode's turns; None: the reference is the response
    demo_key: str | None = None
    corpus_batch: int = setting(16, ge=1)  # supervised pairs per warm-start step
    # critic verdicts on answer-labelled pairs in the corpus (selfcritic/envs/verdicts.py)
    verdicts: VerdictOptions = field(default_factory=VerdictOptions)
    prompt_template: str = "{prompt}"  # the text the model sees, e.g. "Q: {prompt}\nA:"
    split: str = "train"  # the training split of a saved DatasetDict
    heldout_split: str | None = None  # a split of a saved DatasetDict held out for evaluation
    heldout_path: str | None = None  # or a second file (same columns) held out
    # or this share of the rows, chosen by a hash of each prompt (0: no held-out split)
    heldout_fraction: float = setting(0.1, ge=0, lt=1)
    heldout_max: int = setting(256, ge=1)  # held-out prompts evaluated at most
    max_rows: int | None = setting(None, ge=1)  # rows read at most (None: all)
    verifier: str | None = None  # the verifier of the references; None: reward.verifier's
    rubric: str = "k2_core"  # the critic's rubric for rows without their own
    # [OPEN, CLOSE] of a reasoning block (e.g. [<think>, </think>]) stripped before the verifier
    # and the critic see a response (selfcritic/envs/reasoning.py); None: they see it whole
    reasoning_tags: list[str] | None = None


@register_environment("dataset", DatasetOptions)
class DatasetEnvironment(SingleTurn):
    """Prompts from a data file; a held-out split for evaluation."""

    def __init__(self, options: DatasetOptions, cfg: Config) -> None:
        self.name, self.options, self.seed = options.name, options, cfg.data.seed
        self.verifier, self.rubric = options.verifier, options.rubric
        self.reasoning_tags = check_tags(options.reasoning_tags)
        self.chat_template = cfg.data.chat_template
        self.critic_cfg = cfg.critic
        self.train, self.heldout, self.demos = self.read(options)
        self._orders: dict[int, list[int]] = {}  # the permutation of recent epochs
        if not self.train:
            raise ConfigError(
                keyed("env.heldout_fraction", f"no training rows are left in {options.path}")
            )

    def read(self, options: DatasetOptions):
        """(training prompts, held-out prompts, {prompt text: demonstration turns}) from the
        data file (a subclass that makes its prompts overrides this)."""
        rows = read_rows(options.path, options, options.split)
        demos = read_demos(options.path, options, options.split) if options.demo_key else {}
        if options.heldout_path is not None:
            return rows, read_rows(options.heldout_path, options, options.split), demos
        if options.heldout_split is not None:
            return rows, read_rows(options.path, options, options.heldout_split), demos
        return *split_by_hash(rows, options.heldout_fraction), demos

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        if draw:  # dynamic sampling's refills: a seeded sample of their own
            rng = random.Random(f"dataset:{self.seed}:{step}:{draw}")
            return [self.train[i] for i in rng.choices(range(len(self.train)), k=count)]
        start = step * count
        return [self.train[self._position(i)] for i in range(start, start + count)]

    def held_out(self) -> list[Prompt]:
        return self.heldout[: self.options.heldout_max]

    def demonstration(self, prompt: Prompt) -> tuple[list[str], list[str]] | None:
        """A training prompt's demonstration, (turns, observations): its `demo_key` value, else
        its reference as the one turn; None without either."""
        if prompt.text in self.demos:
            return self.demos[prompt.text], []
        if self.options.demo_key is None and prompt.reference is not None:
            return [prompt.reference], []
        return None

    def corpus(self, tokenizer) -> PairsCorpus:
        """The training prompts' demonstrations as supervised pairs (selfcritic/envs/sft.py),
        rendered as the run renders prompts (`data.chat_template`)."""
        encode = prompt_encoder(tokenizer, self.chat_template)

        def make_pairs():
            pairs = []
            for prompt, found in self.demonstrations():
                shown = self.shown(prompt)
                ids = encode(shown.text, shown.system, shown.tools)
                budget = getattr(self, "max_observation_tokens", None)
                pairs += demonstration_pairs(ids, *found, encode, budget)
            return pairs

        recipe = {"options": dataclasses.asdict(self.options), "chat": encode.template}
        actor = PairsCorpus(make_pairs, recipe, self.sources(), self.options.corpus_batch)
        return with_verdicts(actor, self.labeller(), self.critic_cfg, encode)

    def labeller(self) -> Labeller:
        """The critic pairs of the training rows with a reference (selfcritic/envs/verdicts.py)."""
        return Labeller(self.answered(), self.options.verdicts, self.critic_cfg, self.rubric)

    def probes(self, per_aspect: int, ties: int, seed: int) -> list[PairJob]:
        """Labelled pairs for the aspect gate (correctness; style where `verdicts.filler` is
        set), on training rows the verdict corpus never uses (selfcritic/envs/verdicts.py)."""
        return self.labeller().probes(per_aspect, ties, seed)

    def answered(self) -> list[tuple[str, str]]:
        """(prompt as the model sees it, reference) of the training rows with a reference."""
        return [(self.shown(p).text, p.reference) for p in self.train if p.reference is not None]

    def demonstrations(self) -> Iterator[tuple[Prompt, tuple[list[str], list[str]]]]:
        """(prompt, (turns, observations)) for each demonstration the corpus holds: one per
        demonstrated prompt that has one (a subclass may show a prompt answered two ways)."""
        for prompt in self.demonstrated():
            found = self.demonstration(prompt)
            if found is not None:
                yield prompt, found

    def texts(self) -> list[str]:
        """The training texts a `model.tokenizer=bpe` tokenizer learns from: each training
        prompt, its reference and its demonstration's turns (never a held-out one's)."""
        found = [p.text for p in self.train] + [p.reference for p in self.train if p.reference]
        return found + [turn for prompt in self.train for turn in self.demos.get(prompt.text, [])]

    def demonstrated(self) -> list[Prompt]:
        """The prompts whose demonstrations the corpus holds: the training prompts (a subclass
        may add prompts that are demonstrated only, never drawn)."""
        return self.train

    def sources(self) -> tuple[Path, ...]:
        """The files the supervised pairs are made from (part of the warm-start's cache key)."""
        return (data_path(self.options.path),)

    def shown(self, prompt: Prompt) -> Prompt:
        """The prompt as the model sees it (a subclass may add to it: the tool list)."""
        return prompt

    def held_out_count(self) -> int:
        return len(self.heldout[: self.options.heldout_max])

    def all_prompts(self) -> list[Prompt]:
        """Every prompt it may show the model: what the trainer checks for length."""
        return self.train + self.held_out()

    def keep_prompts(self, keep) -> None:
        """Leave out the prompts `keep` rejects (before any draw: the walk is over the rest)."""
        self.train = [p for p in self.train if keep(p)]
        self.heldout = [p for p in self.heldout if keep(p)]
        self._orders = {}  # a walk drawn before (over more rows) is void
        if not self.train:
            raise ConfigError(keyed("data.long_prompts", "no training prompt is short enough"))

    def _position(self, index: int) -> int:
        """The row at position `index` of the infinite walk: epoch after epoch, each a seeded
        permutation of the training rows."""
        epoch, offset = divmod(index, len(self.train))
        if epoch not in self._orders:
            order = list(range(len(self.train)))
            random.Random(f"dataset:{self.seed}:epoch:{epoch}").shuffle(order)
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch][offset]


def split_by_hash(rows: list[Prompt], fraction: float) -> tuple[list[Prompt], list[Prompt]]:
    """(training, held out): a prompt is held out when a hash of its text falls below
    `fraction`, so the split does not depend on the order or the number of rows."""
    train, heldout = [], []
    for prompt in rows:
        (heldout if is_heldout(prompt.text, fraction) else train).append(prompt)
    return train, heldout


def read_rows(path: str, options: DatasetOptions, split: str) -> list[Prompt]:
    """The prompts of a data file (or a saved split), each row checked; ConfigError naming the
    file, the row and the column of the first bad one."""
    table = load_table(data_path(path), split, options.max_rows)
    where = f"data file {path}"
    if split != "train" or data_path(path).is_dir():
        where += f" (split {split!r})"
    if len(table) == 0:
        raise ConfigError(keyed("env.path", f"{where} holds no rows"))
    keys = ("prompt_key", "reference_key", "rubric_key", "budget_key", "system_key", "demo_key")
    for key in keys:
        column = getattr(options, key)
        if column is not None and column not in table.column_names:
            raise ConfigError(
                keyed(
                    f"env.{key}",
                    f"{where} has no column {column!r}; its columns: {table.column_names}",
                )
            )
    return [row_prompt(row, index + 1, where, options) for index, row in enumerate(table.to_list())]


def read_demos(path: str, options: DatasetOptions, split: str) -> dict[str, list[str]]:
    """{prompt text: its demonstration's turns} of the rows with a demonstration (`demo_key`);
    ConfigError naming the row when one is neither a string nor a list of strings."""
    table = load_table(data_path(path), split, options.max_rows)
    demos = {}
    for number, row in enumerate(table.to_list(), start=1):
        demo = row.get(options.demo_key)
        turns = [demo] if isinstance(demo, str) else demo
        if demo is None:
            continue
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise ConfigError(
                keyed(
                    "env.demo_key",
                    f"data file {path}, row {number}: column {options.demo_key!r} must be a "
                    f"string or a list of strings (the turns), got {demo!r}",
                )
            )
        demos[options.prompt_template.format(prompt=row[options.prompt_key])] = turns
    return demos


def row_prompt(row: dict, number: int, where: str, options: DatasetOptions) -> Prompt:
    """One row as a Prompt (`number` counts from 1)."""
    text = row[options.prompt_key]
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            keyed(
                "env.prompt_key",
                f"{where}, row {number}: column {options.prompt_key!r} is "
                f"{'empty' if text is None or isinstance(text, str) else type(text).__name__}; "
                "every row needs a prompt (fix or drop the row)",
            )
        )
    reference = row.get(options.reference_key) if options.reference_key else None
    budget = row.get(options.budget_key) if options.budget_key else None
    if budget is not None and not (isinstance(budget, int) and budget > 0):
        raise ConfigError(
            keyed(
                "env.budget_key",
                f"{where}, row {number}: column {options.budget_key!r} must be a whole number "
                f"of tokens > 0, got {budget!r}",
            )
        )
    return Prompt(
        text=options.prompt_template.format(prompt=text),
        reference=None if reference is None else str(reference),
        token_budget=budget,
        rubric=row.get(options.rubric_key) if options.rubric_key else None,
        system=(row.get(options.system_key) if options.system_key else None)
        or options.system_prompt,
    )


def data_path(path: str) -> Path:
    """A data file's path: a path, or "package:RESOURCE" for a file shipped inside an
    installed Python package (e.g. "selfcritic.envs:data/calculator.jsonl")."""
    package, colon, resource = path.partition(":")
    if colon and package and "/" not in package and not Path(path).exists():
        import importlib.resources

        try:
            return Path(str(importlib.resources.files(package) / resource))
        except ModuleNotFoundError as error:
            raise ConfigError(keyed("env.path", f"{path!r}: no package {package!r}")) from error
    return Path(path).expanduser()


def load_table(path: Path, split: str, max_rows: int | None):
    """The file or saved split as a `datasets.Dataset` (at most `max_rows` rows)."""
    import datasets

    datasets.disable_progress_bars()
    if not path.exists():
        raise ConfigError(keyed("env.path", f"data file {path} does not exist"))
    if path.is_dir():
        table = _load_saved(path, split, datasets)
    else:
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise ConfigError(
                keyed(
                    "env.path",
                    f"data file {path}: unknown format {path.suffix!r}; give one of "
                    f"{sorted(FORMATS)} or a directory saved by datasets' save_to_disk",
                )
            )
        if path.suffix.lower() in TEXT_FORMATS:
            check_utf8(path)
        if path.stat().st_size == 0:
            raise ConfigError(keyed("env.path", f"data file {path} holds no rows"))
        try:
            table = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as error:  # pyarrow's and datasets' parse errors, on one line
            raise ConfigError(
                keyed("env.path", f"data file {path} cannot be read as {kind}: {error}")
            ) from error
    if max_rows is not None and len(table) > max_rows:
        table = table.select(range(max_rows))
    return table


def _load_saved(path: Path, split: str, datasets):
    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as error:
        raise ConfigError(
            keyed("env.path", f"{path} is not a directory saved by datasets: {error}")
        ) from error
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise ConfigError(
                keyed("env.split", f"{path} has no split {split!r}; its splits: {list(saved)}")
            )
        return saved[split]
    return saved


def check_utf8(path: Path) -> None:
    """ConfigError naming the first line that is not UTF-8 (a row of a .jsonl file)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ConfigError(
                    keyed(
                        "env.path",
                        f"data file {path}, line {number}: not UTF-8 text (byte "
                        f"0x{line[error.start]:02x} at column {error.start + 1}); re-encode "
                        "the file as UTF-8",
                    )
                ) from None
