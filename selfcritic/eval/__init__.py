"""Held-out evaluation suites and the end-of-run report.

`nano.py` scores a model on the nano world's held-out splits (actor accuracy, defect rates, critic
quality on a frozen pair set); `report.py` turns the evaluation rows of a run into the report
table and plots; `python -m selfcritic.eval CHECKPOINT --suite nano` evaluates any checkpoint.
"""
