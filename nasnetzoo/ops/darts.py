"""DARTS-family primitives (placeholder: being written)."""
