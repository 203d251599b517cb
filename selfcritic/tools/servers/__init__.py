"""MCP servers shipped for tests and examples; each runs as a script."""
