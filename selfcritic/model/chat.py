"""Prompt ids from text: through the tokenizer's chat template where there is one.

`PromptEncoder` turns a prompt's text (and an optional system prompt) into the ids the engines
and the learner see, the same ids on both sides (the engines take token ids, never text):
- with a chat template (`data.chat_template`: "auto", the tokenizer's own; a .jinja file; or
  "none"), the text is one user message after the optional system message, rendered with the
  generation prompt added, then tokenized without adding special tokens (the template writes
  its own BOS where it wants one);
- without one, the tokenizer's BOS (if it has one), the system prompt and a blank line (if
  any), then the text: what character-level models are trained on.
A response ends at the template's end-of-turn token (`stop_token_ids`: the token the template
writes right after an assistant message, found by rendering one, and the tokenizer's EOS).
In a multi-turn episode an environment's observation is a turn of its own (`observation`): with a
template, the ids the template writes after the model's end-of-turn token, the observation as a
`tool` (or `user`) message, and the next generation prompt, found as the difference of two
renderings, so the episode's earlier ids are never re-tokenized; without one, the raw text.
Tools offered to the model (`Prompt.tools`, JSON schemas) are passed to the template, which
renders them its own way (where it has no tools section they are not shown: the environment's
prompt text must then list them).
`special_texts` are the strings of the tokenizer's special tokens: a tokenizer matches them
inside plain text, so text the model wrote must not carry them into a critic prompt.
Left out: several observations in one turn (one message per observation).
"""

from __future__ import annotations

import json
from pathlib import Path

from selfcritic.config import ConfigError, keyed

AUTO, NONE = "auto", "none"
_PROBE = "\x00selfcritic-probe\x00"  # an assistant message no template writes by itself


def chat_template_of(tokenizer, setting: str) -> str | None:
    """The jinja template `data.chat_template` asks for, or None (raw text). "auto" is the
    tokenizer's own (its default one where it has several), None when it has none."""
    if setting == NONE:
        return None
    if setting == AUTO:
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        return template or None
    path = Path(setting).expanduser()
    if not path.is_file():
        raise ConfigError(
            keyed("data.chat_template", f"{setting!r} is not a file: give auto, none or a .jinja")
        )
    return path.read_text(encoding="utf-8")


class PromptEncoder:
    """text -> prompt ids (module docstring); `chat` tells whether a template renders them."""

    def __init__(self, tokenizer, template: str | None = None) -> None:
        self.tokenizer, self.template = tokenizer, template
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self._fixed: dict = {}  # {(what, template): value} of what does not depend on the text

    @property
    def chat(self) -> bool:
        return self.template is not None

    def __call__(self, text: str, system: str | None = None, tools=None) -> list[int]:
        """The prompt's ids; `tools`: the schemas (or their JSON text) the template renders
        (ignored without a template)."""
        if self.template is None:
            body = text if not system else f"{system}\n\n{text}"
            return self.bos + self.tokenizer(body, add_special_tokens=False).input_ids
        rendered = self.render(text, system, json.loads(tools) if isinstance(tools, str) else tools)
        return self.tokenizer(rendered, add_special_tokens=False).input_ids

    def render(self, text: str, system: str | None = None, tools=None) -> str:
        """The chat template's text for one user turn, the generation prompt added."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text})
        return self._apply(messages, tools=tools, add_generation_prompt=True)

    def observation(self, text: str, role: str = "tool") -> list[int]:
        """The ids that follow a model turn ended by the end-of-turn token: the observation as
        a `role` message and the next generation prompt; the raw text without a template."""
        if self.template is None:
            return self.tokenizer(text, add_special_tokens=False).input_ids
        before, after_turn = self._turn_end()
        history = [{"role": "user", "content": "1"}, {"role": "assistant", "content": _PROBE}]
        after = self._apply([*history, {"role": role, "content": text}], add_generation_prompt=True)
        if not after.startswith(before) or _PROBE not in before:
            raise ValueError(
                "the chat template renders an earlier turn differently once a later one follows:"
                " its observations cannot be appended as ids (set data.chat_template to one that"
                " can)"
            )
        suffix = after_turn + after[len(before) :]
        return self.tokenizer(suffix, add_special_tokens=False).input_ids

    def _turn_end(self) -> tuple[str, str]:
        """(a one-turn conversation's text, what its template writes after the end-of-turn
        token the model wrote): the same for every observation, so rendered once."""
        key = ("turn_end", self.template)
        if key not in self._fixed:
            history = [{"role": "user", "content": "1"}, {"role": "assistant", "content": _PROBE}]
            before = self._apply(history)
            eot = self._end_of_turn()
            written = self.tokenizer.decode([eot]) if eot is not None else ""
            after_turn = (
                before.split(_PROBE, 1)[1].removeprefix(written) if _PROBE in before else ""
            )
            self._fixed[key] = (before, after_turn)
        return self._fixed[key]

    def _apply(self, messages, tools=None, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.template,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )

    def stop_token_ids(self) -> tuple[int, ...]:
        """The ids that end a response: the template's end-of-turn token (where it writes a
        special token right after an assistant message) and the tokenizer's EOS."""
        key = ("stops", self.template)
        if key not in self._fixed:  # rendered once: every generate call asks
            ids = [] if self.template is None else [self._end_of_turn()]
            ids.append(self.tokenizer.eos_token_id)
            self._fixed[key] = tuple(dict.fromkeys(i for i in ids if i is not None))
        return self._fixed[key]

    def turn_stop_ids(self) -> tuple[int, ...]:
        """What a generate call must stop at besides EOS: the stop ids with a chat template,
        none without (EOS already ends a sample)."""
        return self.stop_token_ids() if self.chat else ()

    def _end_of_turn(self) -> int | None:
        messages = [{"role": "user", "content": "1"}, {"role": "assistant", "content": _PROBE}]
        text = self._apply(messages)
        after = text.split(_PROBE, 1)[1] if _PROBE in text else ""
        ids = self.tokenizer(after, add_special_tokens=False).input_ids
        special = set(self.tokenizer.all_special_ids) | {
            i for i, token in self.tokenizer.added_tokens_decoder.items() if token.special
        }
        return ids[0] if ids and ids[0] in special else None

    def special_texts(self) -> tuple[str, ...]:
        """The strings of the special tokens (those a tokenizer matches inside any text)."""
        added = [t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special]
        return tuple(sorted(set(self.tokenizer.all_special_tokens) | set(added)))


def prompt_encoder(tokenizer, chat_template: str = AUTO) -> PromptEncoder:
    """The encoder of `tokenizer` with `data.chat_template`'s setting resolved."""
    return PromptEncoder(tokenizer, chat_template_of(tokenizer, chat_template))
