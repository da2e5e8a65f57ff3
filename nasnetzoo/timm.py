"""Optional timm registration: ``import nasnetzoo.timm`` adds every zoo entry to timm's registry.

    >>> import timm, nasnetzoo.timm
    >>> timm.list_models("nasnetzoo_*darts*")
    >>> backbone = timm.create_model("nasnetzoo_pcdarts_imagenet", num_classes=0, global_pool="")
    >>> features = timm.create_model("nasnetzoo_pcdarts_imagenet", features_only=True, out_indices=(1, 2, 3))

Each entry ``<name>`` becomes ``nasnetzoo_<name>``, built by timm's ``build_model_with_cfg`` (so
timm's ``features_only``, ``pretrained_cfg``, ``resolve_data_config`` and its ``train.py`` /
``validate.py`` see a timm model), with a default cfg from the registry: input size, mean/std,
crop, interpolation, pool size, ``first_conv`` and ``classifier``.  Keyword arguments other than
timm's (``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``, ``drop_path_rate``) are the
builder's (``C``, ``layers``, ``auxiliary``, ...).  ``pretrained=True`` loads the entry's published
weights through nasnetzoo (fetched from their publisher and checksum-verified), not timm's hub.

timm has no entry-point discovery for third-party models, so the import is what registers them.
timm is not a dependency of nasnetzoo: importing this module without it raises one clear error.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any

from .errors import ConfigError
from .registry import get_entry, list_models

try:
    from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
except ImportError:  # pragma: no cover - exercised only where timm is missing
    raise ConfigError("nasnetzoo.timm registers the zoo with timm, which is not installed: "
                      "pip install timm") from None

PREFIX = "nasnetzoo_"


def _default_cfg(name: str) -> dict[str, Any]:
    entry = get_entry(name)
    data = entry.data
    channels, height, width = (int(v) for v in data["input_size"])
    reduction = 32 if entry.architecture.data.startswith("imagenet") else 4  # of the last map
    return dict(
        url="", num_classes=int(entry.config.get("num_classes", 1000)), input_size=(channels, height, width),
        pool_size=(math.ceil(height / reduction), math.ceil(width / reduction)),
        crop_pct=float(data["crop_pct"]), interpolation=data["interpolation"],
        mean=tuple(data["mean"]), std=tuple(data["std"]), fixed_input_size=False,
        first_conv=entry.architecture.builder_fn().first_conv, classifier="classifier",
        notes=(f"nasnetzoo {name}: genotype {entry.genotype_name}, {entry.architecture.name} network "
               f"({entry.dataset})",),
    )


def _build(name: str, pretrained: bool = False, *, num_classes: int, global_pool: str = "avg",
           **kwargs: Any):
    """The nasnetzoo network in training mode (timm's convention), its head set as timm asks."""
    from .factory import load

    if pretrained:  # published weights come with their own classifier; timm's num_classes replaces it
        model = load(name, pretrained=True, **kwargs)
        if num_classes != model.num_classes or global_pool != model.global_pool_type:
            model.reset_classifier(num_classes, global_pool)
    else:
        model = load(name, num_classes=num_classes, **kwargs)
        if global_pool != model.global_pool_type:
            model.reset_classifier(num_classes, global_pool)
    return model.train()


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs: Any):
        return build_model_with_cfg(partial(_build, name, pretrained), PREFIX + name, pretrained=False,
                                    feature_cfg=dict(feature_cls="getter", out_indices=None), **kwargs)

    create.__name__ = create.__qualname__ = PREFIX + name
    create.__module__ = __name__
    create.__doc__ = f"nasnetzoo's {name} (see `nasnetzoo info {name}`)."
    return create


default_cfgs = generate_default_cfgs({PREFIX + name: _default_cfg(name) for name in list_models()})
MODEL_NAMES = []
for _name in list_models():
    register_model(_entrypoint(_name))
    MODEL_NAMES.append(PREFIX + _name)
