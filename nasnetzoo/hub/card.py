"""Publishing weights: a model card (genotype, metrics, recipe, provenance, license, sha256) and
the upload to a Hugging Face hub repo, with the registry entry to add to ``zoo.yaml``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import ConfigError, NasNetZooError, first_line
from ..safe_paths import check_repo_id
from ..weights.format import load_weights, read_metadata
from ..weights.format import folder_config

PathLike = Union[str, Path]


@dataclass
class PushResult:
    model: str  # the registry name the weights load into
    repo_id: str
    filename: str
    revision: Optional[str]
    sha256: str
    card: str
    entry: dict  # the weights entry for zoo.yaml

    def entry_yaml(self) -> str:
        from ..genotype import dump_yaml

        return dump_yaml({"models": {self.model: {"weights": [self.entry]}}})

    def docs_row(self) -> str:
        """The row of the published-weights table in docs/weights.md."""
        from ..weights.sources import WeightsSource, docs_row

        return docs_row(WeightsSource.parse(self.model, {**self.entry, "revision": self.revision or "0" * 40}, 0))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def model_card(spec, meta: Mapping[str, Any], *, filename: str, sha256: str, repo_id: str,
               license: str, revision: Optional[str] = None) -> str:
    """The README.md of a weights repo (Hugging Face model card with YAML front matter)."""
    from ..genotype import dump_yaml

    genotype = spec.genotype
    entry = spec.entry
    dataset = meta.get("dataset") or spec.dataset
    metrics = dict(meta.get("metrics") or {})
    reported = dict(meta.get("reported") or (entry.reported_for(spec.dataset)[0] if entry else {}))
    provenance = dict(meta.get("provenance") or {})
    config = dict(meta.get("config") or spec.config)
    front = {"license": license, "library_name": "nasnetzoo", "pipeline_tag": "image-classification",
             "tags": ["image-classification", "neural-architecture-search", "nasnetzoo",
                      f"{genotype.family}-family", spec.name],
             "datasets": ["imagenet-1k" if dataset == "imagenet" else dataset]}
    index = model_index(spec.name, dataset, metrics, provenance)
    if index:
        front["model-index"] = index
    lines = ["---", dump_yaml(front).rstrip("\n"), "---", "",
             f"# {spec.name} (genotype {genotype.name or '(custom)'}, {genotype.family} family, {dataset})", "",
             f"Weights for the nasnetzoo network `{spec.name}` (network `{spec.architecture.name}`), stored as "
             "safetensors with the metadata nasnetzoo needs to rebuild the network.", "",
             "## Usage", "", "```python", "import nasnetzoo",
             f"model = nasnetzoo.load({spec.name!r}, pretrained=True)       # once the registry lists this file",
             f"model = nasnetzoo.load({spec.name!r}, weights={filename!r})  # a local copy", "",
             "from huggingface_hub import hf_hub_download",
             f"path = hf_hub_download({repo_id!r}, {filename!r})", "```", "",
             "## File", "", "| file | sha256 | revision |", "| --- | --- | --- |",
             f"| `{filename}` | `{sha256}` | {revision or '(the commit that adds it)'} |", "",
             f"Check a download with `sha256sum {filename}`; `nasnetzoo` checks it before loading.", "",
             "## Metrics", ""]
    keys = sorted(set(metrics) | {k for k in reported if k != "source"})
    if keys:
        lines += ["| metric | these weights | paper |", "| --- | --- | --- |"]
        lines += [f"| {k} | {_fmt(metrics[k]) if k in metrics else '-'} | "
                  f"{_fmt(reported[k]) if k in reported else '-'} |" for k in keys]
        if reported.get("source"):
            lines += ["", f"Paper figures: {reported['source']}."]
    else:
        lines.append("No metrics recorded.")
    lines += ["", "## Genotype", "", "```", genotype.to_string(), "```", "", "```yaml",
              dump_yaml(genotype.to_dict()).rstrip("\n"), "```", "",
              "## Network configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", "",
              "## Training recipe", ""]
    recipe = provenance.pop("recipe", None)
    if recipe:
        lines += ["```", recipe if isinstance(recipe, str) else dump_yaml(recipe).rstrip("\n"), "```"]
    elif provenance.get("converted_from"):
        lines.append(f"Converted from a `{provenance['converted_from']}` checkpoint; the recipe is the "
                     "source project's.")
    else:
        lines.append("Not recorded in the weights file.")
    lines += ["", "## Provenance", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in sorted(provenance.items())] or ["- not recorded"]
    if meta.get("nasnetzoo_version"):
        lines.append(f"- written by nasnetzoo {meta['nasnetzoo_version']}")
    if genotype.provenance:
        src = genotype.provenance
        lines.append("- genotype source: " + " ".join(str(src.get(k, "")) for k in ("paper", "repo", "file", "symbol")
                                                      if src.get(k)))
    lines += ["", "## License", "", f"`{license}`.", ""]
    return "\n".join(lines)


# metrics key -> (model-index metric, how to read it as an accuracy in %)
_MEASURED = (("top1", "top-1 accuracy", lambda v: v), ("val_acc", "top-1 accuracy", lambda v: v),
             ("top1_err", "top-1 accuracy", lambda v: 100.0 - v),
             ("publisher_top1_err", "top-1 accuracy", lambda v: 100.0 - v),
             ("top5", "top-5 accuracy", lambda v: v), ("val_top5", "top-5 accuracy", lambda v: v),
             ("top5_err", "top-5 accuracy", lambda v: 100.0 - v),
             ("publisher_top5_err", "top-5 accuracy", lambda v: 100.0 - v))
_DATASET_NAMES = {"imagenet": ("ImageNet-1k", "imagenet-1k"), "cifar10": ("CIFAR-10", "cifar10"),
                  "cifar100": ("CIFAR-100", "cifar100"), "digits": ("scikit-learn digits (32 px)", "digits")}


def measured_source(metrics: Mapping[str, Any], provenance: Mapping[str, Any]) -> Optional[str]:
    """Who measured these weights' figures, or None (then the card's model-index has none)."""
    if metrics.get("source") or metrics.get("publisher_source"):
        return str(metrics.get("source") or metrics.get("publisher_source"))
    if provenance.get("run") or provenance.get("recipe"):
        return "nasnetzoo train, " + ", ".join(f"{k} {provenance[k]}" for k in ("recipe", "run") if provenance.get(k))
    return None


def model_index(name: str, dataset: str, metrics: Mapping[str, Any], provenance: Mapping[str, Any]) -> list:
    """The card's ``model-index``: measured figures only, each result naming its source; the papers'
    figures never go here (they stay in the card's table, marked as the paper's)."""
    source = measured_source(metrics, provenance)
    found = {}
    for key, label, to_accuracy in _MEASURED:
        value = metrics.get(key)
        if label not in found and isinstance(value, (int, float)) and not isinstance(value, bool):
            found[label] = round(float(to_accuracy(value)), 4)
    if not found or source is None:
        return []
    title, kind = _DATASET_NAMES.get(dataset, (dataset, dataset))
    return [{"name": name, "results": [{
        "task": {"type": "image-classification", "name": "Image Classification"},
        "dataset": {"name": title, "type": kind, "split": "validation" if dataset == "imagenet" else "test"},
        "metrics": [{"type": label.replace(" ", "_").replace("-", ""), "name": label, "value": value}
                    for label, value in found.items()],
        "source": {"name": source}}]}]


def push_weights(name: Any, weights: PathLike, repo_id: str, *, license: Optional[str] = None,
                 private: bool = False, api: Any = None, commit_message: Optional[str] = None,
                 dry_run: bool = False) -> PushResult:
    """Upload ``weights`` (a nasnetzoo safetensors file that loads into ``name``) and its model card
    to hub repo ``repo_id``; return the sha256, the commit and the ``zoo.yaml`` weights entry.

    The file is loaded strictly into ``name`` first, so nothing that would fail ``load`` is published.
    """
    from ..factory import spec_for_weights
    from ..weights.fetch import file_digest

    check_repo_id(repo_id)   # before anything, --dry-run included: the id becomes a URL
    weights = Path(weights)
    meta = read_metadata(weights)
    spec = spec_for_weights(name, weights, dataset=None, overrides={}, meta=meta)
    load_weights(spec.build(), weights)
    license = license or meta.get("license")
    if not license:
        raise ConfigError(f"{weights} records no license; pass --license (e.g. apache-2.0, mit, or 'other' "
                          "with the terms in the card) for the weights you publish.")
    sha = file_digest(weights, "sha256")
    revision = None
    card = model_card(spec, meta, filename=weights.name, sha256=sha, repo_id=repo_id, license=license)
    if not dry_run:
        config = (json.dumps(folder_config(meta), indent=2, sort_keys=True, default=str) + "\n").encode()
        revision = _upload(api, repo_id, weights, card, private=private, config=config,
                           message=commit_message or f"Add {weights.name} ({spec.name}) with its model card")
    entry: dict[str, object] = {"tag": "nasnetzoo", "hub": repo_id, "filename": weights.name, "revision": revision or "<commit>",
             "sha256": sha, "layout": "nasnetzoo"}
    if meta.get("metrics"):
        entry["metrics"] = dict(meta["metrics"])
    if meta.get("dataset") and meta["dataset"] != (spec.entry.dataset if spec.entry else None):
        entry["dataset"] = meta["dataset"]
    entry["license"] = license
    return PushResult(spec.name, repo_id, weights.name, revision, sha, card, entry)


def _upload(api: Any, repo_id: str, weights: Path, card: str, *, private: bool, message: str,
            config: bytes = b"{}") -> Optional[str]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api or HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_file(path_or_fileobj=str(weights), path_in_repo=weights.name, repo_id=repo_id,
                        repo_type="model", commit_message=message)
        api.upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id=repo_id, repo_type="model",
                        commit_message=f"config.json for {weights.name}")
        info = api.upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                               repo_type="model", commit_message=f"Model card for {weights.name}")
    except HfHubHTTPError as err:
        first = first_line(err)
        raise NasNetZooError(f"upload of {weights.name} to hub repo {repo_id} failed ({first}); log in with "
                             "`hf auth login` (or set HF_TOKEN) with write access to the repo.") from None
    except Exception as err:  # noqa: BLE001 - OSError, or httpx's transport errors (not OSErrors)
        if not isinstance(err, OSError) and not type(err).__module__.startswith(("httpx", "httpcore")):
            raise
        raise NasNetZooError(f"upload of {weights.name} to hub repo {repo_id} failed ({first_line(err)}); check "
                             "the network (HF_ENDPOINT, proxy settings).") from None
    return getattr(info, "oid", None)
