"""A character-level tokenizer for the nano world, built locally with `tokenizers`.

It is a BPE model with no merges, so every character is one token, except the nano world's stock
phrases (selfcritic/data/phrases.py), which are added tokens: one token each wherever they occur,
as a real vocabulary gives a common phrase one or two. Saved as a Hugging Face
`PreTrainedTokenizerFast`, so transformers and vLLM load it like any checkpoint's tokenizer.
Left out: byte fallback (characters outside the alphabet become `<unk>`) and chat templates.
"""

from __future__ import annotations

import string
from pathlib import Path

from selfcritic.data.phrases import STOCK_PHRASES

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Printable ASCII (space included) plus newline: everything the nano world writes.
ALPHABET = tuple(dict.fromkeys(string.printable[:-5] + " \n"))


def build_char_tokenizer(directory: Path, model_max_length: int) -> None:
    """Write tokenizer.json and its config into `directory` (created if missing)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + ALPHABET)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    # normalized=False: matched on the raw text, spaces included, so "Great! " is one token.
    core.add_tokens([AddedToken(phrase, normalized=False) for phrase in STOCK_PHRASES])
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


def vocab_size() -> int:
    """Number of distinct token ids the tokenizer produces."""
    return len(SPECIAL_TOKENS) + len(ALPHABET) + len(STOCK_PHRASES)
