"""Weights: the one home of nasnetzoo's weights format, its published sources and their download.

* :mod:`.format` - the safetensors format: the one writer (:func:`write_weights`,
  :func:`save_pretrained`) and the one reader (:func:`read_metadata`, :func:`load_weights`).
* :mod:`.sources` - the ``weights:`` lists of ``zoo.yaml`` (publisher, checksum, layout, metrics).
* :mod:`.layouts` - foreign checkpoints read without running code, renamed to nasnetzoo's keys.
* :mod:`.convert` - the layout table and the one ``convert(state, model, layout)`` (both paths use it).
* :mod:`.cfg`, :mod:`.preprocess` - each published file's pretrained cfg and its eval transform.
* :mod:`.fetch` - download (hub or URL), checksum before unpickling, zip extraction, the cache.
* :mod:`.pretrained` - ``pretrained=True``: fetch, convert once, cache keyed by the source checksum.

This package sits below ``nasnetzoo.factory``: it never imports it (the network to convert into is
built by the caller and passed in).
"""
from ..errors import CheckpointError
from .format import (FORMAT_VERSION, METADATA_KEYS, ChecksumError, WeightsError,
                     WeightsUnavailableError, check_config_bounds, check_fits, check_tensors, encode_metadata,
                     load_weights, model_metadata, read_metadata, read_state_dict, save_pretrained,
                     state_dict_mismatch, write_weights)

__all__ = [
    "FORMAT_VERSION", "METADATA_KEYS", "CheckpointError", "ChecksumError", "WeightsError",
    "WeightsUnavailableError", "check_config_bounds", "check_fits", "check_tensors", "encode_metadata",
    "load_weights", "model_metadata", "read_metadata", "read_state_dict", "save_pretrained",
    "state_dict_mismatch", "write_weights",
]
