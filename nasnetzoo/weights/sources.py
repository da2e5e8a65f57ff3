"""Where published weights come from: the ``weights:`` lists of ``zoo.yaml``, parsed and checked.

One entry per file, first = default for ``pretrained=True``; ``tag`` picks another (as timm's
``name.tag``).  A file is either on the Hugging Face hub (``hub`` + ``filename`` + a pinned
``revision``) or at an https ``url``; it carries the checksum its *publisher* recorded, in the
publisher's algorithm::

    - tag: osmr_in1k
      url: https://github.com/osmr/imgclsmob/releases/download/v0.0.485/darts-0775-fc3171c5.pth.zip
      archive: zip                      # optional: the file is a zip holding `member`
      member: darts-0775-fc3171c5.pth
      sha1: fc3171c5b89b270fc7673dbbb5047f5879d7e774   # or sha256: <64 hex>, or sha256_prefix: <8+ hex>
      layout: pytorchcv                 # nasnetzoo, timm, cadene, pytorchcv, darts, pcdarts, pdarts, nni
      config: {pool_padding: tf}        # builder options the source's network needs
      metrics: {top1_err: 25.31, top5_err: 7.75, source: pytorchcv model_metainfos.csv}
      license: MIT
      provenance: osmr's own retrain of the DARTS genotype (pytorchcv `darts`)
      cfg: {input_size: [3, 224, 224], crop_pct: 0.875, resize_rounding: ceil}   # how the publisher evaluated it
      cfg_source: osmr/imgclsmob pytorch/datasets/imagenet1k_cls_dataset.py  # where those values were read

With an archive the checksum is that of the member (pytorchcv records the SHA-1 of the extracted
``.pth``).  A ``sha256_prefix`` (torch.hub's file-name convention) is a weaker check, and ``info``
and the docs say so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import ConfigError, did_you_mean
from ..registry import get_entry, list_models
from ..safe_paths import check_name, check_relative_file, check_repo_id
from .cfg import PREPROCESSING, CfgError, check_preprocessing
from .convert import LAYOUTS as LAYOUT_TABLE
from .format import WeightsUnavailableError

LAYOUTS = tuple(LAYOUT_TABLE)   # weights/convert.py: one record per layout
CHECKSUMS = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha1": re.compile(r"^[0-9a-f]{40}$"),
             "sha256_prefix": re.compile(r"^[0-9a-f]{8,63}$")}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_FIELDS = {"tag", "hub", "filename", "revision", "url", "archive", "member", "layout", "config", "dataset",
           "metrics", "license", "provenance", "cfg", "cfg_source", *CHECKSUMS}


@dataclass(frozen=True)
class WeightsSource:
    """One published weights file of a registry entry."""

    model: str
    tag: str
    checksum_kind: str          # sha256, sha1 or sha256_prefix
    checksum: str
    layout: str = "nasnetzoo"
    hub: Optional[str] = None   # Hugging Face repo id
    filename: Optional[str] = None
    revision: Optional[str] = None
    url: Optional[str] = None
    archive: Optional[str] = None
    member: Optional[str] = None
    config: Mapping[str, Any] = field(default_factory=dict)
    dataset: Optional[str] = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    license: str = ""
    provenance: str = ""
    cfg: Mapping[str, Any] = field(default_factory=dict)   # the publisher's preprocessing (weights/cfg.py)
    cfg_source: str = ""                                   # where the cfg's values were read

    @property
    def where(self) -> str:
        """The URL (or hub file) in words, for messages."""
        if self.url:
            return self.url
        return f"https://huggingface.co/{self.hub}/resolve/{self.revision}/{self.filename}"

    @property
    def file_name(self) -> str:
        """The name of the downloaded file."""
        return self.filename if self.hub else self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def weak_checksum(self) -> bool:
        return self.checksum_kind == "sha256_prefix"

    @property
    def cache_key(self) -> str:
        """Names the converted file: the source checksum, so a new publisher file is a new key."""
        return f"{self.model}-{self.tag}-{self.checksum_kind}-{self.checksum}"

    def describe_checksum(self) -> str:
        text = f"{self.checksum_kind} {self.checksum}"
        if self.archive:
            text += f" (of {self.member} inside the {self.archive})"
        if self.weak_checksum:
            text += f" - a weaker check: only the first {len(self.checksum) * 4} bits of the sha256 are published"
        return text

    @classmethod
    def parse(cls, model: str, data: Mapping[str, Any], index: int) -> "WeightsSource":
        where = f"zoo.yaml models.{model}.weights[{index}]"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a weights entry must be a mapping, got {data!r}.")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown weights field(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(_FIELDS))}.")
        kinds = [k for k in CHECKSUMS if data.get(k)]
        if len(kinds) != 1:
            raise ConfigError(f"{where}: give exactly one publisher checksum ({', '.join(CHECKSUMS)}), got "
                              f"{kinds or 'none'}.")
        kind = kinds[0]
        digest = str(data[kind]).lower()
        if not CHECKSUMS[kind].match(digest):
            size = {"sha256": "64", "sha1": "40", "sha256_prefix": "8 to 63"}[kind]
            raise ConfigError(f"{where}: {kind} {data[kind]!r} is not {size} hexadecimal digits.")
        if bool(data.get("hub")) == bool(data.get("url")):
            raise ConfigError(f"{where}: give either hub (with filename and revision) or url.")
        if data.get("hub"):
            missing = [k for k in ("filename", "revision") if not data.get(k)]
            if missing:
                raise ConfigError(f"{where}: weights entry lacks {', '.join(missing)} (a hub file needs both).")
            if not _COMMIT.match(str(data["revision"])):
                raise ConfigError(f"{where}: revision {data['revision']!r} is not a 40-hex commit; pin the "
                                  "commit so the file cannot change under its checksum.")
        elif not str(data["url"]).startswith(("https://", "http://")):
            raise ConfigError(f"{where}: url {data['url']!r} is not an http(s) URL.")
        archive = data.get("archive")
        if archive not in (None, "zip") or bool(archive) != bool(data.get("member")):
            raise ConfigError(f"{where}: archive must be 'zip' and come with member (the file inside it).")
        _check_names(where, model, data, index)
        cfg = data.get("cfg") or {}
        try:
            cfg = check_preprocessing(cfg, f"{where}.cfg") if isinstance(cfg, Mapping) else None
        except CfgError as err:
            raise ConfigError(str(err)) from None
        if cfg is None:
            raise ConfigError(f"{where}: cfg must be a mapping of {', '.join(PREPROCESSING)}.")
        if cfg and not data.get("cfg_source"):
            raise ConfigError(f"{where}: cfg needs a cfg_source (where its values were read: the publisher's "
                              "evaluation code).")
        layout = data.get("layout", "nasnetzoo")
        if layout not in LAYOUTS:
            raise ConfigError(f"{where}: layout {layout!r} is not one of {', '.join(LAYOUTS)}.")
        return cls(model=model, tag=str(data.get("tag") or f"file{index}"), checksum_kind=kind,
                   checksum=digest, layout=layout, hub=data.get("hub"), filename=data.get("filename"),
                   revision=data.get("revision"), url=data.get("url"), archive=archive,
                   member=data.get("member"), config=dict(data.get("config") or {}),
                   dataset=data.get("dataset"), metrics=dict(data.get("metrics") or {}),
                   license=str(data.get("license") or ""), provenance=str(data.get("provenance") or ""),
                   cfg=cfg, cfg_source=str(data.get("cfg_source") or ""))


def _check_names(where: str, model: str, data: Mapping[str, Any], index: int) -> None:
    """The tag, hub id and file names become cache paths and URLs: refuse '../' and the like."""
    try:
        check_name(model, "model name")
        check_name(data.get("tag") or f"file{index}", "tag")
        if data.get("hub"):
            check_repo_id(data["hub"], "hub")
            check_relative_file(data["filename"], "filename")
        else:
            check_name(str(data["url"]).rstrip("/").rsplit("/", 1)[-1], "the url's file name")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def sources_for(model: str) -> list[WeightsSource]:
    """The published weights of registry entry ``model`` (name or alias), default first."""
    entry = get_entry(model)
    return [WeightsSource.parse(entry.name, w, i) for i, w in enumerate(entry.weights)]


def published() -> dict[str, list[WeightsSource]]:
    """Every registry entry that has weights -> its sources."""
    return {name: sources_for(name) for name in list_models() if get_entry(name).has_weights}


DEFAULT_NO_WEIGHTS = "no public file with a published checksum exists"


def select_source(model: str, *, tag: Optional[str] = None, dataset: Optional[str] = None) -> WeightsSource:
    """The default source of ``model`` (or the one tagged ``tag``); a clear error when there is none."""
    entry = get_entry(model)
    candidates = sources_for(entry.name)
    if dataset is not None:
        candidates = [s for s in candidates if (s.dataset or entry.dataset) == dataset]
    if tag is not None:
        tags = [s.tag for s in candidates]
        candidates = [s for s in candidates if s.tag == tag]
        if not candidates:
            raise WeightsUnavailableError(
                f"{entry.name} has no weights tagged {tag!r}.{did_you_mean(tag, tags)} Tags: "
                f"{', '.join(tags) or 'none'}.")
    if candidates:
        return candidates[0]
    why = entry.no_weights or DEFAULT_NO_WEIGHTS
    what = f"{entry.name} has no published weights" + (f" for {dataset}" if dataset else "")
    recipe = "retrain_imagenet" if entry.dataset == "imagenet" else "retrain_cifar10"
    raise WeightsUnavailableError(
        f"{what} (models with weights: {', '.join(published()) or 'none'}): {why}. Two ways forward: "
        f"convert a checkpoint you have with `nasnetzoo convert --from FORMAT CHECKPOINT -o file.safetensors "
        f"--arch {entry.name}` and load it with nasnetzoo.load({entry.name!r}, weights='file.safetensors'), "
        f"or train it: `nasnetzoo train --recipe recipes/{recipe}.yaml --arch {entry.name}`.")


def _figures(metrics: Mapping[str, Any]) -> str:
    errors = [metrics.get(k) for k in ("top1_err", "top5_err") if metrics.get(k) is not None]
    parts = []
    if errors:
        parts.append("top-1/top-5 error " + " / ".join(f"{e:g}" for e in errors) + " %")
    parts += [f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
              for k, v in metrics.items() if k not in ("top1_err", "top5_err", "source")]
    return ", ".join(parts) or "none given"


def describe(model: str) -> list[str]:
    """The ``weights:`` lines of ``nasnetzoo info``: each file, its checksum kind and the
    publisher's figures beside the paper's."""
    entry = get_entry(model)
    sources = sources_for(entry.name)
    if not sources:
        why = entry.no_weights or DEFAULT_NO_WEIGHTS
        return [f"weights:   none published ({why}); `nasnetzoo convert` a checkpoint you have, or retrain "
                "it (docs/training.md)"]
    paper = _figures({k: v for k, v in entry.reported.items() if k in ("top1_err", "top5_err")})
    lines = [f"weights:   {len(sources)} published file(s); pretrained=True loads the first, tag= picks another"]
    for i, s in enumerate(sources):
        lines.append(f"  {s.tag}{' (default)' if i == 0 else ''}: {s.where}")
        lines.append(f"    checksum {s.describe_checksum()}; layout {s.layout}; license {s.license or '?'}")
        source = f" ({s.metrics['source']})" if s.metrics.get("source") else ""
        lines.append(f"    publisher's figures: {_figures(s.metrics)}{source}; paper: {paper}")
        if s.provenance:
            lines.append(f"    provenance: {s.provenance}")
    return lines


def as_json(model: str) -> list[dict]:
    """The sources of ``model`` for ``nasnetzoo info --json``."""
    return [{"tag": s.tag, "url": s.where, "checksum_kind": s.checksum_kind, "checksum": s.checksum,
             "weak_checksum": s.weak_checksum, "layout": s.layout, "archive": s.archive, "member": s.member,
             "metrics": dict(s.metrics), "license": s.license, "provenance": s.provenance,
             "cfg": dict(s.cfg), "cfg_source": s.cfg_source}
            for s in sources_for(model)]


def docs_row(source: WeightsSource) -> str:
    """The row of the published-weights table in docs/weights.md (one per file)."""
    figures = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in sorted(source.metrics.items()) if k != "source") or "-"
    where = source.hub or source.url.rsplit("/", 1)[0] + "/"
    member = f" (member `{source.member}`)" if source.member else ""
    provenance = "; ".join(p for p in (source.provenance, source.metrics.get("source")) if p) or "-"
    return (f"| {source.model} | `{source.file_name}`{member} | {where} | {source.revision or '-'} | "
            f"{source.checksum} | {figures} | {source.checksum_kind} | {source.tag} | {source.layout} | "
            f"{provenance} | {source.license or '-'} |")
