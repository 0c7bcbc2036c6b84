"""Configuration: `types` (value types and bases), `env` (interpolation), `model` (the file)."""
