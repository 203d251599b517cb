"""selfcritic: reinforcement learning of language models that critique themselves (after Kimi K2).

The package holds the library; `python -m selfcritic.run +experiment=NAME` is the entry point.
Heavy dependencies (ray, vllm, wandb, transformers) are imported inside the functions that need them
so that importing the package stays fast.
"""

__version__ = "0.1.0"
