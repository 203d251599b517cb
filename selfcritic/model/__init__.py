"""Model presets, build/load/save in Hugging Face format."""
