"""The model registry: names and aliases -> genotype, builder, default config, reported metrics.

The facts live in ``zoo.yaml`` (beside this file) and the genotypes in ``genotypes/*.yaml``;
this module only reads them.  Aliases match case- and separator-insensitively, so
``PC-DARTS-ImageNet``, ``pc_darts_imagenet`` and ``pcdarts-imagenet`` name the same entry.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .errors import ConfigError, UnknownModelError, close_matches, did_you_mean, hint_for
from .genotype import Genotype, from_file
from .yamlio import read_yaml

_PACKAGE_DIR = Path(__file__).resolve().parent

DATASETS = {  # dataset name -> (data preset, number of classes)
    "cifar10": ("cifar", 10),
    "cifar100": ("cifar", 100),
    "imagenet": ("imagenet", 1000),
    "digits": ("cifar", 10),  # the embedded smoke dataset: scikit-learn digits upsampled to 32 px
}


def genotype_dir() -> Path:
    """Where the published genotype files are: inside the installed package (wheel), or the
    ``genotypes/`` folder of a source checkout (editable install)."""
    for candidate in (_PACKAGE_DIR / "genotypes", _PACKAGE_DIR.parent / "genotypes"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise FileNotFoundError("nasnetzoo's genotypes/ folder is missing from the installation; "
                            "reinstall the package (pip install nasnetzoo).")


def _key(name: str) -> str:
    """Canonical form for matching: lower case, separators dropped."""
    return re.sub(r"[\s_\-.@]+", "", name.lower())


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    builder: str  # "module:Class"
    dataset: str
    data: str
    config: Mapping[str, Any]
    transfer_target: bool = False

    def builder_fn(self) -> Callable:
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry.  ``config`` is the builder's keyword arguments, ``data`` the
    preprocessing a model of this entry expects (input size, mean/std, crop, interpolation)."""

    name: str
    aliases: tuple[str, ...]
    genotype_name: str
    architecture: Architecture  # the macro-architecture (builder) the cell is placed in
    config: Mapping[str, Any]
    data: Mapping[str, Any]
    reported: Mapping[str, Any]
    computed: Mapping[str, Any]
    reference_key: str
    notes: str = ""
    transfer: Mapping[str, Any] = field(default_factory=dict)
    weights: tuple = ()
    no_weights: str = ""  # why no weights are registered, when that is known (zoo.yaml `no_weights`)

    @property
    def family(self) -> str:
        return self.architecture.family

    @property
    def dataset(self) -> str:
        return self.architecture.dataset

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.data["input_size"])

    @property
    def genotype(self) -> Genotype:
        return get_genotype(self.genotype_name)

    @property
    def has_weights(self) -> bool:
        return bool(self.weights)

    def reported_for(self, dataset: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """(reported, computed) figures for this cell on ``dataset`` ({} when none are known)."""
        if DATASETS[dataset][0] == DATASETS[self.dataset][0]:
            return self.reported, self.computed
        other = self.transfer.get(dataset, {})
        return other.get("reported", {}), other.get("computed", {})


@functools.lru_cache(maxsize=1)
def _zoo() -> tuple[dict[str, Any], dict[str, Architecture], dict[str, ModelEntry]]:
    raw = read_yaml(_PACKAGE_DIR / "zoo.yaml", what="registry file")
    presets = raw["data"]
    architectures = {name: Architecture(name, a["family"], a["builder"], a["dataset"], a["data"], a["config"],
                                a.get("transfer_target", False))
             for name, a in raw["architectures"].items()}
    entries = {}
    for name, e in raw["models"].items():
        architecture = architectures[e["architecture"]]
        data = {**presets[architecture.data], **e.get("data", {})}
        entries[name] = ModelEntry(
            name=name, aliases=tuple(e.get("aliases", ())), genotype_name=e["genotype"], architecture=architecture,
            config={**architecture.config, **e.get("config", {})}, data=data, reported=e.get("reported", {}),
            computed=e.get("computed", {}), reference_key=e.get("reference_key", ""),
            notes=" ".join(e.get("notes", "").split()), transfer=e.get("transfer", {}),
            weights=tuple(e.get("weights", ())), no_weights=" ".join(e.get("no_weights", "").split()))
    return presets, architectures, entries


@functools.lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for name, entry in _zoo()[2].items():
        for alias in (name, *entry.aliases):
            index.setdefault(_key(alias), name)
    return index


def list_models(pattern: Optional[str] = None) -> list[str]:
    """Registry names, sorted; ``pattern`` is a shell-style filter (``"*darts*"``), case-insensitive."""
    names = sorted(_zoo()[2])
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())
                 or any(fnmatch.fnmatch(a.lower(), pattern.lower()) for a in _zoo()[2][n].aliases)]
    return names


def get_entry(name: str) -> ModelEntry:
    """The entry for a name or alias; an unknown name raises with the closest names."""
    if not isinstance(name, str):
        raise UnknownModelError(f"a model name must be a string, got {type(name).__name__}.")
    canonical = _alias_index().get(_key(name))
    if canonical is None:
        everything = list(_zoo()[2]) + [a for e in _zoo()[2].values() for a in e.aliases]
        hits = close_matches(name, everything, n=4)
        if not hits:  # fall back to canonical-form containment ("pcdarts" -> pcdarts_*)
            hits = [n for n in _zoo()[2] if _key(name) in _key(n)][:4]
        raise UnknownModelError(f"unknown model {name!r}.{hint_for(hits)} `nasnetzoo list` shows all models.")
    return _zoo()[2][canonical]


def is_model_name(name: str) -> bool:
    return _key(name) in _alias_index()


def data_preset(name: str) -> Mapping[str, Any]:
    return _zoo()[0][name]


def architecture_for(family: str, dataset: str) -> Architecture:
    """The default network of ``family`` for ``dataset`` (CIFAR-10/100 or ImageNet)."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}.")
    preset = DATASETS[dataset][0]
    for arch in _zoo()[1].values():
        if arch.transfer_target and arch.family == family and DATASETS[arch.dataset][0] == preset:
            return arch
    raise ConfigError(f"no {dataset} network is defined for the {family} family.")


# ------------------------------------------------------------------ genotypes
@functools.lru_cache(maxsize=None)
def _genotype_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(genotype_dir().glob("*.yaml"))}


def list_genotypes() -> list[str]:
    return list(_genotype_files())


def get_genotype(name: str) -> Genotype:
    """A published genotype by its file name (``darts_v2``) or by a model name/alias that uses it
    (``PC-DARTS-ImageNet``)."""
    files = _genotype_files()
    wanted = _key(name)
    for stem, path in files.items():
        if _key(stem) == wanted:
            return _load_genotype(path)
    if is_model_name(name):
        return get_genotype(get_entry(name).genotype_name)
    hint = did_you_mean(name, list(files) + list_models(), n=4)
    raise UnknownModelError(f"unknown genotype {name!r}.{hint} Published genotypes: {', '.join(files)}.")


@functools.lru_cache(maxsize=None)
def _load_genotype(path: Path) -> Genotype:
    return from_file(path)
