"""One conversion path: the layout table and :func:`convert`, used by ``pretrained=True``
(``weights/pretrained.py``) and by ``nasnetzoo convert`` (``hub/convert.py``).

A :class:`Layout` names a foreign checkpoint layout, how its keys map to nasnetzoo's
(``weights/layouts.py``), the layout it is read as after renaming (NNI's file -> the official DARTS
names), and the source library's own model that the output check compares against, when that
library is importable.  :func:`convert` renames the keys, fills what eval mode never reads,
refuses anything that does not fit strictly, and loads the tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from .format import WeightsError, check_tensors, state_dict_mismatch
from .layouts import map_state_dict, source_key_map


@dataclass(frozen=True)
class Reference:
    """How to build a source library's own model (random init) for the output check."""

    models: Mapping[str, str]             # registry name -> the library's model name
    module: str                           # what to import
    build: Callable[[Any, str, int], nn.Module]   # (module, model name, classes) -> model
    label: str                            # "{name}": how the check names the model
    no_model: str                         # "{arch}": the library has no model for this entry
    not_importable: str                   # the line when the import fails
    import_errors: tuple = (ImportError,)


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    reads_as: Optional[str] = None        # renamed to this layout's names first
    reference: Optional[Reference] = None

    def key_map(self, model: nn.Module) -> dict[str, str]:
        """{nasnetzoo key: source key} for ``model`` (after ``reads_as`` renaming)."""
        return source_key_map(model, self.reads_as or self.name)


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("nasnetzoo", "nasnetzoo's own safetensors files"),
    Layout("darts", "official DARTS (quark0/darts cnn/model.py NetworkCIFAR / NetworkImageNet)"),
    Layout("pcdarts", "official PC-DARTS (yuhuixu1993/PC-DARTS model.py, the DARTS network)"),
    Layout("pdarts", "official P-DARTS (chenxin061/pdarts model.py, aux head with BatchNorm2d(768))"),
    Layout("timm", "timm nasnetalarge / pnasnet5large", reference=Reference(
        {"nasnet_a_large": "nasnetalarge", "pnasnet5_large": "pnasnet5large"}, "timm",
        build=lambda m, name, n: m.create_model(name, pretrained=False, num_classes=n),
        label="timm {name}", no_model="timm has no model for {arch}",
        not_importable="timm is not installed (pip install timm)")),
    Layout("cadene", "Cadene pretrainedmodels nasnetamobile / nasnetalarge / pnasnet5large", reference=Reference(
        {"nasnet_a_mobile": "nasnetamobile", "nasnet_a_large": "nasnetalarge", "pnasnet5_large": "pnasnet5large"},
        "pretrainedmodels", build=lambda m, name, n: getattr(m, name)(num_classes=n, pretrained=None),
        label="Cadene {name}", no_model="Cadene's pretrainedmodels has no model for {arch}",
        not_importable="Cadene's pretrainedmodels is not importable (pip install pretrainedmodels)",
        import_errors=(Exception,))),   # ImportError, or its own missing dependencies
    Layout("pytorchcv", "pytorchcv (osmr imgclsmob) darts / nasnet_4a1056 / nasnet_6a4032 / pnasnet5large",
           reference=Reference(
               {"darts_v2_imagenet": "darts", "nasnet_a_mobile": "nasnet_4a1056", "nasnet_a_large": "nasnet_6a4032",
                "pnasnet5_large": "pnasnet5large"}, "pytorchcv.model_provider",
               build=lambda m, name, n: m.get_model(name, pretrained=False, num_classes=n),
               label="pytorchcv {name}", no_model="pytorchcv has no model for {arch}",
               not_importable="pytorchcv is not installed (pip install pytorchcv)")),
    Layout("nni", "NNI's DARTS space with a fixed architecture (nni.nas.hub.pytorch.DARTS, e.g. darts-v2-5465b0d2.pth)",
           reads_as="darts", reference=Reference(
               {"darts_v2_cifar": "darts-v2"}, "nni.nas.hub.pytorch",
               build=lambda m, name, n: m.DARTS.load_searched_model(name),
               label="NNI DARTS.load_searched_model({name!r})", no_model="NNI's space hub has no fixed model for {arch}",
               not_importable="NNI is not importable (pip install nni)",
               import_errors=(Exception,))),   # ImportError, or NNI's own dependencies
)}


@dataclass
class Converted:
    """What :func:`convert` loaded: the renamed state, buffers filled, and notes (a dropped row)."""

    state: dict = field(default_factory=dict)
    filled: int = 0
    notes: list = field(default_factory=list)


def convert(state: Mapping[str, torch.Tensor], model: nn.Module, layout: str, *, source: Any = "the checkpoint",
            target: str = "this architecture", fix: str = "Build the model the weights were trained with (same genotype, num_classes, auxiliary, "
                       "C/layers).") -> Converted:
    """Rename ``state`` (in ``layout``) to ``model``'s keys, check it fits strictly (keys, shapes,
    dtypes, finite values) and load it into ``model``; a misfit raises WeightsError naming ``source``
    and ``target``, with ``fix``."""
    if layout not in LAYOUTS:
        raise WeightsError(f"unknown checkpoint layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    mapped, filled, notes = map_state_dict(state, model, layout)
    problems = state_dict_mismatch(model.state_dict(), mapped)
    if problems:
        raise WeightsError(f"{source} does not fit {target}; {problems}. {fix}")
    check_tensors(mapped, model.state_dict(), source)
    model.load_state_dict(mapped, strict=True)
    return Converted(mapped, filled, notes)


def reference_model(layout: str, arch: str, num_classes: int) -> tuple[Optional[nn.Module], str]:
    """The source library's own model for ``arch`` (random init), or None and why not."""
    import importlib

    ref = LAYOUTS[layout].reference
    if ref is None:
        return None, (f"the official {layout} code is research code, not an importable package; keys and shapes "
                      "were matched strictly by name")
    name = ref.models.get(arch)
    if name is None:
        return None, ref.no_model.format(arch=arch)
    try:
        module = importlib.import_module(ref.module)
    except ref.import_errors:
        return None, ref.not_importable
    return ref.build(module, name, num_classes), ref.label.format(name=name)
