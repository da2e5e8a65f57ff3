"""``nasnetzoo.load``: from a name, alias, genotype file or Genotype to an eval-ready ``nn.Module``."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from torch import nn

from .bounds import check_model_config
from .errors import ConfigError, UnknownModelError, did_you_mean
from .genotype import Genotype, parse
from .models.features import features_only
from .registry import (DATASETS, Architecture, ModelEntry, architecture_for, data_preset,
                       get_entry, is_model_name, list_models)
from .weights.format import WeightsError, check_config_bounds, load_weights, read_metadata
from .weights.fetch import hub_cache_dir, is_offline, timeout_s
from .weights.pretrained import pretrained_file
from .weights.cfg import network_cfg, with_source
from .weights.sources import WeightsSource, select_source

# Builder options that describe the cell's ops rather than the network around it; they follow a
# cell when it is built on another dataset (SNAS's pools keep their BatchNorm on ImageNet).
CELL_OPTIONS = ("pool_bn",)

GENOTYPE_SUFFIXES = (".yaml", ".yml", ".json", ".txt", ".py", ".log")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a network, resolved from the user's arguments."""

    name: str
    genotype: Genotype
    architecture: Architecture
    dataset: str
    config: dict
    data: dict
    entry: Optional[ModelEntry]

    def build(self) -> nn.Module:
        builder = self.architecture.builder_fn()
        _check_kwargs(builder, self.config, self.name)
        model = builder(self.genotype, **self.config)
        model.pretrained_cfg = self.pretrained_cfg()
        return model

    def pretrained_cfg(self, source: Optional[WeightsSource] = None) -> dict:
        """timm's fields (weights/cfg.py) and nasnetzoo's; ``source``: the published file's own
        preprocessing replaces the entry's."""
        own = self.entry is not None and self.entry.architecture is self.architecture
        preset = f"data.{self.architecture.data}" + (f" and models.{self.entry.name}.data" if own else "")
        cfg = {"name": self.name, "genotype": self.genotype.name, "family": self.genotype.family,
               "architecture": self.architecture.name, "dataset": self.dataset,
               **network_cfg(self.architecture.name, self.data, self.config.get("num_classes"), preset),
               "config": dict(self.config)}  # what save_pretrained records to rebuild the network
        if source is not None:
            cfg = with_source(cfg, self.architecture.name, source.cfg, source.cfg_source or "zoo.yaml", tag=source.tag,
                              hf_hub_id=source.hub, url=source.url, license=source.license)
        if self.entry is not None:
            reported, computed = self.entry.reported_for(self.dataset)
            cfg.update(reported=dict(reported), computed=dict(computed))
        return cfg


def resolve(name_or_genotype: Union[str, Path, Genotype, Mapping], *, dataset: Optional[str] = None,
            **overrides: Any) -> ModelSpec:
    """Turn ``load``'s arguments into a ModelSpec without building anything."""
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}.")
    if isinstance(name_or_genotype, str) and is_model_name(name_or_genotype):
        return _resolve_entry(get_entry(name_or_genotype), dataset, overrides)
    genotype = _read_genotype(name_or_genotype)
    dataset = dataset or genotype.provenance.get("dataset") or "cifar10"
    if dataset not in DATASETS:
        raise ConfigError(f"genotype {genotype.name or ''!s} names dataset {dataset!r}; pass dataset= "
                          f"one of {', '.join(DATASETS)}.")
    architecture = architecture_for(genotype.family, dataset)
    return _spec(genotype.name or "custom", genotype, architecture, dataset, dict(architecture.config), None,
                 overrides)


def _resolve_entry(entry: ModelEntry, dataset: Optional[str], overrides: dict) -> ModelSpec:
    if dataset is None or DATASETS[dataset][0] == DATASETS[entry.dataset][0]:
        return _spec(entry.name, entry.genotype, entry.architecture, dataset or entry.dataset,
                     dict(entry.config), entry, overrides)
    # The same cell on another dataset: a registry entry if the papers have one, else the
    # family's default network for that dataset.
    preset = DATASETS[dataset][0]
    for name in list_models():
        other = get_entry(name)
        if other.genotype_name == entry.genotype_name and DATASETS[other.dataset][0] == preset:
            return _spec(other.name, other.genotype, other.architecture, dataset, dict(other.config), entry, overrides)
    architecture = architecture_for(entry.family, dataset)
    config = dict(architecture.config)
    config.update({k: v for k, v in entry.config.items() if k in CELL_OPTIONS})
    return _spec(f"{entry.name}@{dataset}", entry.genotype, architecture, dataset, config, entry, overrides)


def _spec(name, genotype, architecture, dataset, config, entry, overrides) -> ModelSpec:
    if genotype.family != architecture.family:
        raise ConfigError(f"genotype {genotype.name!r} is of the {genotype.family} family, but network "
                          f"{architecture.name!r} builds {architecture.family} cells.")
    if dataset != architecture.dataset or "num_classes" not in config:
        config["num_classes"] = DATASETS[dataset][1]
    config.update(overrides)
    check_model_config(config)  # sizes in range before anything is allocated
    same_network = entry is not None and entry.architecture is architecture
    data = dict(entry.data) if same_network else dict(data_preset(architecture.data))
    return ModelSpec(name, genotype, architecture, dataset, config, data, entry)


def _read_genotype(value: Union[str, Path, Genotype, Mapping]) -> Genotype:
    if isinstance(value, (Genotype, Mapping)):
        return parse(value)
    text = str(value)
    if "Genotype(" in text:
        return parse(text)
    path = Path(text)
    if path.is_dir() and (path / "genotype.yaml").is_file():  # a search run directory
        path = path / "genotype.yaml"
    if path.is_file() or path.suffix in GENOTYPE_SUFFIXES:
        return parse(path)
    hint = did_you_mean(text, list_models(), n=4)
    raise UnknownModelError(f"unknown model {text!r}: not a registry name, alias or genotype file.{hint} "
                            "`nasnetzoo list` shows all models.")


def _check_kwargs(builder, config: Mapping[str, Any], name: str) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p != "genotype"]
    for key in config:
        if key not in valid:
            raise ConfigError(f"{name}: unknown option {key!r}.{did_you_mean(key, valid)} "
                              f"Valid options: {', '.join(valid)}.")


def load(name_or_genotype: Union[str, Path, Genotype, Mapping], pretrained: bool = False, *,
         weights: Optional[Union[str, Path]] = None, dataset: Optional[str] = None, tag: Optional[str] = None,
         **overrides: Any) -> nn.Module:
    """Build a zoo network, in eval mode (:func:`load_with_spec` also returns the spec it was built from).

    ``name_or_genotype``: a registry name or alias (``"pcdarts_imagenet"``, ``"PC-DARTS-ImageNet"``),
    a genotype file (``"runs/s1/genotype.yaml"``, or the run directory), a ``Genotype`` or its dict.
    ``dataset``: build the cell's network for ``cifar10``, ``cifar100`` or ``imagenet``.
    ``weights``: a safetensors file to load strictly; the builder config saved in it (by
    ``save_pretrained``) is used, so a 100-class or auxiliary-head network is rebuilt as saved.
    ``pretrained``: the entry's published weights (``nasnetzoo list`` shows which have some),
    fetched from their publisher, checksum-verified, converted once and cached; ``tag`` picks a
    non-default file (``nasnetzoo info NAME`` lists the tags).
    Other keyword arguments override the builder's defaults, and a weights file's saved config
    (``num_classes``, ``auxiliary``, ``drop_path_rate``, ``C``, ``layers``, ...).
    """
    features, out_indices = overrides.pop("features_only", False), overrides.pop("out_indices", None)
    if out_indices is not None and not features:
        raise ConfigError(f"out_indices={out_indices!r} picks feature maps: pass features_only=True with it.")
    if pretrained and weights is not None:
        raise ConfigError("pass either pretrained=True or weights=PATH, not both.")
    if tag is not None and not pretrained:
        raise ConfigError(f"tag={tag!r} picks a published weights file: pass pretrained=True with it.")
    model = load_with_spec(name_or_genotype, pretrained, weights=weights, dataset=dataset, tag=tag, **overrides)[1]
    return features_only(model, out_indices) if features else model


def load_with_spec(name_or_genotype: Union[str, Path, Genotype, Mapping], pretrained: bool = False, *,
                   weights: Optional[Union[str, Path]] = None, dataset: Optional[str] = None,
                   tag: Optional[str] = None, **overrides: Any) -> tuple[ModelSpec, nn.Module]:
    """:func:`load`, returning ``(spec, model)``: what was built (name, dataset, input size, config)
    beside the network, resolved once (a weights file's saved config included)."""
    if weights is None and not pretrained and isinstance(name_or_genotype, (str, Path)):
        found = self_describing_weights(name_or_genotype)
        if found is not None:
            name_or_genotype, weights = found
    source = None
    if pretrained:
        source = _pretrained_source(name_or_genotype, dataset=dataset, tag=tag)
        weights = pretrained_weights(name_or_genotype, dataset=dataset, tag=tag)
    if weights is None:
        spec = resolve(name_or_genotype, dataset=dataset, **overrides)
        return spec, spec.build().eval()
    spec = spec_for_weights(name_or_genotype, weights, dataset=dataset, overrides=overrides)
    model = spec.build()
    load_weights(model, weights)
    if source is not None:  # the published file's own preprocessing, as its publisher evaluated it
        model.pretrained_cfg = spec.pretrained_cfg(source)
    return spec, model.eval()


def pretrained_cfg(name: str, *, tag: Optional[str] = None, dataset: Optional[str] = None) -> dict:
    """The pretrained cfg of ``name``'s published file (``tag``: another than the default), with
    where each value came from (``cfg_sources``); nothing is downloaded or built."""
    source = _pretrained_source(name, dataset=dataset, tag=tag)
    spec = resolve(source.model, dataset=source.dataset or dataset, **source.config)
    return spec.pretrained_cfg(source)


HUB_PREFIX = "hf-hub:"
NASNETZOO_FIELDS = ("nasnetzoo_format", "arch", "genotype", "config")   # any one: the file says what it holds
WEIGHTS_NAME = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def self_describing_weights(target: Union[str, Path]) -> Optional[tuple[Any, Path]]:
    """``(what to build, weights file)`` for ``load("w.safetensors")``, ``load("./folder")``,
    ``load("hf-hub:owner/repo")`` and ``load("owner/repo")``, taken from the file's metadata; None
    when ``target`` is none of these (a registry name or a genotype file)."""
    text = str(target)
    path = Path(text)
    try:
        exists = path.exists()
    except OSError:   # a genotype string longer than a file name may be: not a path at all
        return None
    if text.startswith(HUB_PREFIX):
        weights = _hub_weights(text[len(HUB_PREFIX):])
    elif not exists and _REPO_ID.match(text) and not is_model_name(text) and path.suffix not in GENOTYPE_SUFFIXES:
        try:   # "owner/repo" may as well be a mistyped path: say both
            weights = _hub_weights(text)
        except (WeightsError, ConfigError) as err:
            raise UnknownModelError(f"unknown model {text!r}: not a registry name, alias, genotype file, weights file "
                                    f"or folder, and as a hub repo id: {err} `nasnetzoo list` shows all models.") from None
    elif path.is_dir() and (path / WEIGHTS_NAME).is_file():
        weights = path / WEIGHTS_NAME
    elif path.is_file() and path.suffix == ".safetensors":
        weights = path
    else:
        return None
    return arch_from_metadata(read_metadata(weights), weights), weights


def arch_from_metadata(meta: Mapping[str, Any], path: Any) -> Any:
    """The registry name (``arch``) or the genotype a weights file records; one line when neither is usable."""
    if not any(meta.get(k) for k in NASNETZOO_FIELDS):
        raise WeightsError(f"{path} carries no nasnetzoo metadata, so it does not say which network it holds; "
                           "load it with nasnetzoo.load(NAME, weights=PATH), or convert it with `nasnetzoo convert`.")
    arch = meta.get("arch")
    if isinstance(arch, str) and is_model_name(arch):
        return get_entry(arch).name
    genotype = meta.get("genotype")
    if isinstance(genotype, Mapping):
        return dict(genotype)
    raise WeightsError(f"{path}: metadata names no registry arch ({arch!r}) and holds no genotype; load it with "
                       "nasnetzoo.load(NAME_OR_GENOTYPE_FILE, weights=PATH).")


def _hub_weights(repo_id: str) -> Path:
    """``model.safetensors`` of hub repo ``repo_id`` through ``hf_hub_download`` (its cache and
    ``HF_HUB_OFFLINE`` apply)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise ConfigError(f"hub repo id {repo_id!r} is not 'owner/name' (letters, digits, '-', '_', '.').")
    kwargs = dict(library_name="nasnetzoo", cache_dir=str(hub_cache_dir()))
    try:
        try:
            return Path(hf_hub_download(repo_id, WEIGHTS_NAME, local_files_only=True, **kwargs))
        except LocalEntryNotFoundError:
            if is_offline():
                raise
        _probe_hub(repo_id)   # one short try: huggingface_hub would retry an unreachable host for minutes
        return Path(hf_hub_download(repo_id, WEIGHTS_NAME, etag_timeout=timeout_s(), **kwargs))
    except LocalEntryNotFoundError:
        raise WeightsError(f"hf-hub:{repo_id}: {WEIGHTS_NAME} is not in the Hugging Face cache and cannot be "
                           "downloaded now (offline: HF_HUB_OFFLINE is set, or no network); fetch it where there "
                           "is network, or load a local copy with nasnetzoo.load('path/model.safetensors').") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"hf-hub:{repo_id}: {WEIGHTS_NAME} could not be fetched ({first}).") from None


def _probe_hub(repo_id: str) -> None:
    import urllib.error
    import urllib.request

    from huggingface_hub import hf_hub_url

    try:
        urllib.request.urlopen(urllib.request.Request(hf_hub_url(repo_id, WEIGHTS_NAME), method="HEAD"),
                               timeout=timeout_s()).close()
    except urllib.error.HTTPError:
        return   # the hub answers: hf_hub_download reports what it says
    except (urllib.error.URLError, OSError) as err:
        raise WeightsError(f"hf-hub:{repo_id}: {WEIGHTS_NAME} is not in the Hugging Face cache and the hub cannot be "
                           f"reached ({getattr(err, 'reason', err)}); fetch it where there is network, or set "
                           "HF_HUB_OFFLINE=1 to use the cache only.") from None


def _pretrained_source(name: Any, *, dataset: Optional[str], tag: Optional[str]) -> WeightsSource:
    if not isinstance(name, str) or not is_model_name(name):
        raise ConfigError(f"pretrained=True needs a registry name (see `nasnetzoo list`); {str(name)[:80]!r} "
                          "is not one, so pass your own weights with weights='file.safetensors'.")
    return select_source(get_entry(name).name, tag=tag, dataset=dataset)


def pretrained_weights(name: Any, *, dataset: Optional[str] = None, tag: Optional[str] = None,
                       force: bool = False) -> Path:
    """The local nasnetzoo weights file of ``name``'s published weights (fetched on first use)."""
    source = _pretrained_source(name, dataset=dataset, tag=tag)
    entry = get_entry(source.model)

    def build(config: Mapping[str, Any]) -> nn.Module:
        return resolve(entry.name, dataset=source.dataset or dataset, **config).build()

    return pretrained_file(source, build, force=force)


# ---------------------------------------------------------------------------- weights files
def spec_for_weights(name_or_genotype: Any, path: Union[str, Path], *, dataset: Optional[str],
                     overrides: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> ModelSpec:
    """The ModelSpec to build for weights file ``path``.

    The file's saved config is the base and the user's keyword arguments override it (so
    ``load("pcdarts_cifar", weights=w)`` rebuilds a 100-class, auxiliary-head network when ``w``
    was saved from one).  Absurd saved sizes are refused before anything is allocated; a file saved
    for another genotype or network raises WeightsError naming both and the call that loads it.
    """
    meta = read_metadata(path) if meta is None else meta
    if not any(meta.get(k) for k in NASNETZOO_FIELDS):
        raise WeightsError(f"{path} carries no nasnetzoo metadata (no arch, genotype or config), so nothing says which "
                           "network its tensors fit; convert it with `nasnetzoo convert --from FORMAT ...`, or write "
                           "it with nasnetzoo.save_pretrained.")
    saved_config = meta.get("config")
    if saved_config is not None and not isinstance(saved_config, Mapping):
        raise WeightsError(f"{path}: metadata 'config' is not a mapping; rewrite it with save_pretrained.")
    config = {**(saved_config or {}), **overrides}
    check_config_bounds(config, path)
    saved_dataset = meta.get("dataset")
    if dataset is None and saved_dataset in DATASETS:
        dataset = saved_dataset
    spec = resolve(name_or_genotype, dataset=dataset, **config)
    _check_same_network(spec, meta, path)
    return spec


def _check_same_network(spec: ModelSpec, meta: Mapping[str, Any], path) -> None:
    saved = meta.get("genotype")
    arch = meta.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise WeightsError(f"{path}: metadata 'arch' is {arch!r}, not a name; rewrite it with save_pretrained.")
    if isinstance(arch, str) and is_model_name(arch):
        fix = f"Load it with nasnetzoo.load({arch!r}, weights={str(path)!r})"
    else:
        fix = "Load it with the genotype file it was trained from"
    if isinstance(saved, Mapping):
        try:
            saved_genotype = Genotype.parse(dict(saved))
        except Exception as err:  # a damaged field should not hide the weights
            raise WeightsError(f"{path}: metadata 'genotype' cannot be parsed ({err}).") from None
        if saved_genotype != spec.genotype:
            raise WeightsError(
                f"{path} holds weights for genotype {saved_genotype.name or '(custom)'!r}, but "
                f"{spec.name!r} uses genotype {spec.genotype.name or '(custom)'!r}, a different cell. "
                f"{fix}.")
    saved_architecture = meta.get("architecture")
    if saved_architecture and saved_architecture != spec.architecture.name:
        raise WeightsError(
            f"{path} holds weights for the {saved_architecture!r} network, but {spec.name!r} builds "
            f"{spec.architecture.name!r}. {fix}, or pass the dataset it was trained on "
            f"({meta.get('dataset') or 'see its metadata'}).")
    # same cell and network, but the file says it is another registry entry (e.g. pcdarts vs darts weights)
    if isinstance(arch, str) and is_model_name(arch) and spec.entry is not None and is_model_name(spec.name) \
            and get_entry(arch).name != get_entry(spec.name).name:
        raise WeightsError(f"{path} holds weights for {get_entry(arch).name!r} (its metadata's arch), not "
                           f"{spec.name!r}; load it with nasnetzoo.load({get_entry(arch).name!r}, weights={str(path)!r}).")
