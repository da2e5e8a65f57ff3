"""NASNet-family (TF-slim) primitives (placeholder: being written)."""
