"""Prompt sources, the synthetic nano world and tokenizer building."""
