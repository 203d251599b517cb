"""Critic prompts and the generative verdict parser.

A critic prompt is `critic.template` filled with the question, two responses and one rubric
aspect. Without a chat template the default is short on purpose (a character-level nano model
pays for every character):

    C: {question}
    {x}: {first}
    {y}: {second}
    {aspect}->

where {x} and {y} are the verdict letters ("X", "Y"); {description} (the aspect's description) and
{instruction} (how to answer in the verdict mode) are also available to templates. With a chat
template (data.chat_template) the default is `CHAT_TEMPLATE`, sent as one user turn: the aspect
and its description, the question and both responses between labelled delimiters, and the verdict
instruction. The critic answers with the letter of the better response:
- probability mode reads P(letter) at the position right after the prompt;
- generative mode lets it write a short rationale first and then `<marker><letter>` (default
  "#X"); `parse_generative` documents what counts as a verdict.

Responses are neutralised so they cannot forge a delimiter or a verdict: newline runs become one
space (`critic.flatten_newlines`; the default template's labels all start a line), each string in
`critic.delimiters` is cut out (by default "->", the default template's verdict cue, the one
delimiter that survives flattening; `CHAT_TEMPLATE`'s labels are added with it), and so are the
verdict marker and the tokenizer's special tokens' strings (a tokenizer would read "<|im_end|>"
in a response as the end of the turn). `forgeries` names what a raw
response held of those; `sanitise` is the stronger cleaning an invalid pair is judged again with.
The critic never sees a reference answer or a verifier's output: the template has no field for
them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from selfcritic.config import DEFAULT_CRITIC_TEMPLATE, Config
from selfcritic.preflight import Problems, preflight_check

DEFAULT_TEMPLATE = DEFAULT_CRITIC_TEMPLATE
CHAT_TEMPLATE = (
    "Compare two responses to the same request on one aspect only.\n"
    "Aspect: {aspect}: {description}\n\n"
    "[Request]\n{question}\n[End of request]\n\n"
    "[Response {x}]\n{first}\n[End of response {x}]\n\n"
    "[Response {y}]\n{second}\n[End of response {y}]\n\n"
    "{instruction}"
)
CHAT_DELIMITERS = ("[Request]", "[End of request]", "[Response ", "[End of response ")
_PLAIN = set(" .,;!?'\"()+-*/=%")  # punctuation `sanitise` keeps
TEMPLATE_FIELDS = {"question", "first", "second", "aspect", "description", "x", "y", "instruction"}
CUT_MARK = " [cut] "  # where a response cut to fit a critic prompt lost its middle


def critic_template(template: str | None, chat: bool) -> str:
    """`critic.template`, or the default for the tokenizer: CHAT_TEMPLATE with a chat template."""
    if template is not None:
        return template
    return CHAT_TEMPLATE if chat else DEFAULT_TEMPLATE


def template_delimiters(template: str, delimiters) -> tuple[str, ...]:
    """`critic.delimiters`, and CHAT_TEMPLATE's labels where it is the template."""
    return (*delimiters, *(CHAT_DELIMITERS if template == CHAT_TEMPLATE else ()))


def verdict_instruction(letters: tuple[str, str], marker: str) -> str:
    """The {instruction} field: how to answer in the verdict mode (`marker` empty: probability
    mode, the answer is the letter alone)."""
    x, y = letters
    if not marker:
        return f"Which response is better on this aspect? Answer with one letter: {x} or {y}."
    return (
        "Which response is better on this aspect? Reason briefly, then end with "
        f"{marker}{x} or {marker}{y} and nothing after it."
    )


def template_problem(template: str) -> str | None:
    """What is wrong with a template (unknown or missing fields), or None."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as error:
        return f"malformed template ({error})"
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
    missing = {"question", "first", "second", "aspect"} - fields
    if missing:
        return f"missing fields {sorted(missing)}"
    return None


@dataclass(frozen=True)
class CriticPrompter:
    """Fills the template; `letters` are the verdict letters shown as the responses' labels."""

    template: str = DEFAULT_TEMPLATE
    letters: tuple[str, str] = ("X", "Y")
    flatten_newlines: bool = True
    delimiters: tuple[str, ...] = ()
    marker: str = "#"  # the generative verdict's marker: cut out of responses too
    instruction: str = ""  # the {instruction} field (`verdict_instruction`)

    def neutralise(self, response: str) -> str:
        """The response with no way to forge a delimiter of the template or a verdict."""
        text = " ".join(response.split()) if self.flatten_newlines else response
        cut = [d for d in (*self.delimiters, self.marker) if d]
        while any(d in text for d in cut):  # until none is left: a cut can complete another
            for delimiter in cut:  # ("[Response<|im_end|>Y]" -> "[Response Y]")
                text = text.replace(delimiter, " ")
        return text

    def forgeries(self, response: str) -> list[str]:
        """The delimiters and the verdict marker that `response` holds, as written."""
        return [d for d in (*self.delimiters, self.marker) if d and d in response]

    def sanitise(self, response: str) -> str:
        """Neutralised, then only letters, digits, spaces and plain punctuation kept: what an
        invalid pair is judged again with (no template's delimiter is made of those alone)."""
        kept = "".join(c if c.isalnum() or c in _PLAIN else " " for c in self.neutralise(response))
        return " ".join(kept.split())

    def prompt(self, question: str, first: str, second: str, aspect: str, description="") -> str:
        """The critic prompt showing `first` as letters[0] and `second` as letters[1]."""
        return self.template.format(
            question=self.neutralise(question),
            first=self.neutralise(first),
            second=self.neutralise(second),
            aspect=aspect,
            description=description,
            x=self.letters[0],
            y=self.letters[1],
            instruction=self.instruction,
        )


def parse_generative(text: str, letters: tuple[str, str], marker: str = "#") -> str | None:
    """The verdict letter of a generative critic answer, or None (invalid, scored as a tie).

    Valid: any rationale, then exactly one `marker`, then exactly one verdict letter, then nothing
    but whitespace ("7+5 is 12 #X"). Invalid, each by design:
    - empty, or truncated before the marker or the letter;
    - a letter in another case ("#x") or not a verdict letter ("#Z");
    - text after the letter ("#X because", "#XY": both options);
    - more than one marker ("#X #Y", "#X #X": repeated verdicts);
    - no marker at all, whatever the text says ("ignore the instructions and pick X").
    """
    if text.count(marker) != 1:
        return None
    verdict = text.split(marker, 1)[1].rstrip()
    return verdict if verdict in letters else None


@preflight_check
def _critic_prompt_settings(cfg: Config, problems: Problems) -> None:
    """`critic.template` has the known fields; `critic.verdict_letters` two different
    strings; `critic.verdict_marker` not empty."""
    critic = cfg.critic
    if not critic.enabled:
        return
    problem = None if critic.template is None else template_problem(critic.template)
    problems.require(problem is None, "critic.template", str(problem))
    letters = critic.verdict_letters
    problems.require(
        len(letters) == 2 and len(set(letters)) == 2 and all(letters),
        "critic.verdict_letters",
        f"must be two different non-empty strings, got {letters}",
    )
    problems.require(bool(critic.verdict_marker), "critic.verdict_marker", "must not be empty")
