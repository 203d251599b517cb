"""The character-level tokenizer of locally built presets, built with `tokenizers`.

It is a BPE model with no merges, so every character is one token, except the phrases the
preset names (`model.phrases`: by default the nano world's stock phrases), which are added
tokens: one token each wherever they occur, as a real vocabulary gives a common phrase one or
two. Saved as a Hugging Face
`PreTrainedTokenizerFast`, so transformers and vLLM load it like any checkpoint's tokenizer.
Left out: byte fallback (characters outside the alphabet become `<unk>`) and chat templates.
"""

from __future__ import annotations

import importlib
import string
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Printable ASCII (space included) plus newline.
ALPHABET = tuple(dict.fromkeys(string.printable[:-5] + " \n"))


def load_phrases(spec: str | None) -> tuple[str, ...]:
    """The phrases `model.phrases` names ("package.module:NAME", a sequence of strings); ()
    for None."""
    if spec is None:
        return ()
    module, _, name = spec.partition(":")
    try:
        phrases = tuple(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError, ValueError, TypeError) as error:
        raise ValueError(f"model.phrases={spec!r} cannot be loaded: {error}") from error
    if not all(isinstance(p, str) and p for p in phrases):
        raise ValueError(f"model.phrases={spec!r} must name non-empty strings")
    return phrases


def build_char_tokenizer(directory: Path, model_max_length: int, phrases: tuple[str, ...]) -> None:
    """Write tokenizer.json and its config into `directory` (created if missing)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + ALPHABET)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    # normalized=False: matched on the raw text, spaces included, so "Great! " is one token.
    core.add_tokens([AddedToken(phrase, normalized=False) for phrase in phrases])
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))


def vocab_size(phrases: tuple[str, ...]) -> int:
    """Number of distinct token ids the tokenizer produces."""
    return len(SPECIAL_TOKENS) + len(ALPHABET) + len(phrases)
