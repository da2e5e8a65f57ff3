"""Kept for imports written against older versions: the format's home is ``nasnetzoo.weights``."""
from ..weights.format import FORMAT_VERSION, encode_metadata, model_metadata, save_pretrained  # noqa: F401
