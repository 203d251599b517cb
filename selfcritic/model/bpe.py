"""A byte-level BPE tokenizer with a ChatML chat template, trained here on a world's own texts.

For a locally built model that should read its task as a chat model does (`model.tokenizer=bpe`):
`train_chat_tokenizer` trains `tokenizers`' BPE on the texts an environment gives (its questions,
answers and demonstrations, and the critic's fixed prompt text), so a common word or a template
line is one token or a few, and saves it as a Hugging Face `PreTrainedTokenizerFast` that
transformers and vLLM load like any checkpoint's. The chat template is ChatML (Qwen's form):
a turn ends with `<|im_end|>`, which is also the tokenizer's EOS, so a response ends where the
template ends the assistant's turn. Byte-level: no text is ever `<unk>`. The special tokens'
strings are matched inside plain text, as in any Hugging Face tokenizer: text the model wrote
is kept from carrying them into a critic prompt by `special_texts` (selfcritic/model/chat.py).

Training is deterministic for the same texts in the same order (the merges break ties by the
pair's order), so the model cache key (selfcritic/model/build.py) holds a hash of the texts.
Left out: pre-trained vocabularies (a checkpoint's own tokenizer is `model.path`'s), byte
fallback tuning, and normalisation (texts are kept as written).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2 (selfcritic/model/families.py)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the bytes and the specials
# ChatML, as Qwen's instruct models write it: each message a turn closed by <|im_end|>
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# the template's own words, trained on too so that a turn's header is a token or two
TEMPLATE_WORDS = ("system\n", "user\n", "assistant\n", "tool\n")


def train_chat_tokenizer(
    texts: Iterable[str], directory: Path, vocab_size: int, model_max_length: int
):
    """Train a byte-level BPE of at most `vocab_size` tokens (the 256 bytes and the special
    tokens included) on `texts`, save it with ChatML to `directory` and return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"a byte-level BPE needs vocab_size >= {MIN_VOCAB}, got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator([*TEMPLATE_WORDS, *texts], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return tokenizer
