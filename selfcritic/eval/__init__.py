"""Held-out evaluation and the end-of-run report.

`held_out.py` scores a model on an environment's held-out split (the environment's own suite
where it has one, else its verifier on sampled answers); `report.py` turns the evaluation rows
of a run into the report table and plots; `python -m selfcritic.eval CHECKPOINT --env NAME`
evaluates any checkpoint.
"""
