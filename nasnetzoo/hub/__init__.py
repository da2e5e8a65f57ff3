"""Weights: safetensors with metadata, the Hugging Face hub, converters from official checkpoints."""
