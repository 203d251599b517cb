"""The nano world's stock phrases: the defects its responses carry, one vocabulary token each.

A real BPE vocabulary spends one or two tokens on a common phrase like "Great!" or "I think";
the nano tokenizer (selfcritic/model/tokenizer.py, `model.phrases`) does the same for these, so
that noticing a defect is noticing one token, as it is for a real model, and not spelling it
out character by character. Measured in docs/nano-probe-log.md: with the phrases spelled in
characters the 4.6M-parameter critic was at 59-83% on them after the 250-step warm-start; as
one token each, at 95-100% (run 5). Everything else (answers, words, the judge's prompt,
the evaluation's injection sentence) stays one character per token.
Left out: where the phrases go (selfcritic/envs/nano/world.py) and how the oracle finds them
(rewards/nano_oracle.py, by pattern on the text, so it does not depend on tokens).
"""

from __future__ import annotations

PRAISE = ("Great! ", "Nice! ", "Wow! ")  # an opening compliment
META = ("I think ", "My answer: ", "Let me see, ")  # commentary about the answer
FILLER = (" you know", " and so on", " la la")  # off-topic text after the answer
CLAIM = " I am right."  # the exploitable defect: no rubric aspect names it
STOCK_PHRASES = (*PRAISE, *META, *FILLER, CLAIM)
