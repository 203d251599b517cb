"""The nano model preset's character tokenizer and the stock phrases it keeps whole."""
