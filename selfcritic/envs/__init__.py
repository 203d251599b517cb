"""Environments: the one unit a user plugs in for a task (selfcritic/envs/base.py)."""
