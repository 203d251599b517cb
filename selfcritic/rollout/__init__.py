"""Rollout: the RolloutEngine protocol, the vLLM engine, the Ray pool and weight sync."""
