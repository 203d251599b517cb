"""The learner: advantages, policy losses as pure tensor functions, and the optimisation step."""
