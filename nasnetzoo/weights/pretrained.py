"""``pretrained=True``: fetch a publisher's file, verify it, convert it once, cache the result.

The converted nasnetzoo file is written atomically to ``<cache>/converted/<key>.safetensors``,
the key holding the source's checksum (a publisher that replaces its file gets a new key, never
the old conversion), with its sha256 and size beside it (``cache_digest``), checked on every load.  A second load finds that file and needs neither the network nor the source.

The network the tensors are converted into is built by the caller (``nasnetzoo.factory``) and
passed in as ``build``, so this package never imports the factory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from ..safe_paths import check_name
from . import cache_digest, fetch
from .format import WeightsError, WeightsUnavailableError, save_pretrained
from .layouts import read_checkpoint
from .convert import convert
from .sources import WeightsSource

Builder = Callable[[Mapping], nn.Module]


def converted_path(source: WeightsSource) -> Path:
    key = check_name(source.cache_key, "cache key")   # tags are checked in the registry; never a path
    return fetch.cache_root() / "converted" / f"{key}.safetensors"


def pretrained_file(source: WeightsSource, build: Builder, *, force: bool = False) -> Path:
    """The nasnetzoo weights file for ``source``: from the cache (its digest checked), else
    fetched and converted.  A damaged cached file is made again, or refused with the command."""
    if source.layout == "nasnetzoo":  # already in nasnetzoo's format: only fetch and verify
        return fetch.fetch(source, force=force)
    target = converted_path(source)
    if not force and cache_digest.damage(target) is None:
        return target
    with fetch.locked(target):
        damaged = None if force or not target.exists() else cache_digest.damage(target)
        if not force and target.exists() and damaged is None:  # another process converted it while we waited
            return target
        cache_digest.discard(target)
        try:
            convert_source(source, build, target, force=force)
        except WeightsUnavailableError as err:
            if damaged is None:
                raise
            raise WeightsError(
                f"{source.model}: the cached conversion {target} was damaged ({damaged}) and was removed; its "
                f"source cannot be fetched to make it again ({err}). Run `nasnetzoo download {source.model} "
                f"--tag {source.tag} --force` on a machine with network.") from None
        return cache_digest.record(target)


def convert_source(source: WeightsSource, build: Builder, target: Path, *, force: bool = False) -> Path:
    raw = fetch.fetch(source, force=force)
    if source.archive:
        with fetch.extracted(raw, source) as member:
            fetch.verify(member, source, shown=Path(source.member), discard=raw)  # checked, then read
            state = read_checkpoint(member)
    else:
        state = read_checkpoint(raw)
    model = build(source.config)
    done = convert(state, model, source.layout, source=f"{source.where} ({source.layout} layout)")
    filled, notes = done.filled, done.notes
    provenance = {"source": source.where, "source_checksum": f"{source.checksum_kind}:{source.checksum}",
                  "source_layout": source.layout, "converter": "nasnetzoo.weights.pretrained",
                  "publisher": source.provenance, "filled_num_batches_tracked": filled, "notes": notes}
    metadata = {"provenance": provenance, "license": source.license or None,
                "metrics": {f"publisher_{k}" if k != "source" else "publisher_source": v
                            for k, v in source.metrics.items()} or None}
    return save_pretrained(model, target, metadata=metadata)
