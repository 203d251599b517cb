"""The self-critic: the policy model judging pairs of its own responses against a rubric."""
