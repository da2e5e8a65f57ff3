"""Published weights: registry entries -> the Hugging Face hub cache, sha256-checked.

A registry entry lists its weights in ``zoo.yaml`` (first = default)::

    weights:
      - hub: nasnetzoo/pcdarts_cifar         # Hugging Face repo id
        filename: pcdarts_cifar.safetensors
        revision: 0123456789abcdef0123456789abcdef01234567   # a commit: pinned, immutable
        sha256: <64 hex digits of the file>
        metrics: {top1: 97.43}                # measured with these weights
        dataset: cifar10                      # optional, default: the entry's dataset
        license: apache-2.0                   # optional
        source: retrained with recipes/pcdarts_cifar.yaml   # optional provenance

Files are fetched with ``huggingface_hub.hf_hub_download`` into its cache (``HF_HUB_CACHE``, else
``HF_HOME``/hub, else ~/.cache/huggingface/hub), never downloaded when ``HF_HUB_OFFLINE`` is set,
and checked against ``sha256`` before anything reads them; a file that fails the check is
deleted from the cache so that it cannot pass as valid later.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import ConfigError
from ..weights import ChecksumError, WeightsUnavailableError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class WeightsEntry:
    """One published weights file of a registry entry."""

    repo_id: str
    filename: str
    sha256: str
    revision: str = "main"
    dataset: Optional[str] = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    license: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "WeightsEntry":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a weights entry must be a mapping with hub, filename, revision "
                              f"and sha256, got {data!r}.")
        known = {"hub", "repo_id", "filename", "revision", "sha256", "metrics", "dataset", "license", "source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown weights field(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}.")
        repo_id = data.get("hub") or data.get("repo_id")
        missing = [k for k, v in (("hub", repo_id), ("filename", data.get("filename")),
                                  ("sha256", data.get("sha256"))) if not v]
        if missing:
            raise ConfigError(f"{where}: weights entry lacks {', '.join(missing)}.")
        sha = str(data["sha256"]).lower()
        if not _SHA256.match(sha):
            raise ConfigError(f"{where}: sha256 {data['sha256']!r} is not 64 hexadecimal digits.")
        return cls(repo_id=str(repo_id), filename=str(data["filename"]), sha256=sha,
                   revision=str(data.get("revision") or "main"), dataset=data.get("dataset"),
                   metrics=dict(data.get("metrics") or {}), license=str(data.get("license") or ""),
                   source=str(data.get("source") or ""))

    def to_dict(self) -> dict:
        out = {"hub": self.repo_id, "filename": self.filename, "revision": self.revision,
               "sha256": self.sha256}
        for key in ("metrics", "dataset", "license", "source"):
            if getattr(self, key):
                out[key] = dict(self.metrics) if key == "metrics" else getattr(self, key)
        return out


def weights_entries(model: str) -> list[WeightsEntry]:
    """The published weights of registry entry ``model`` (name or alias), default first."""
    from ..registry import get_entry

    entry = get_entry(model)
    return [WeightsEntry.from_dict(w, f"zoo.yaml models.{entry.name}.weights[{i}]")
            for i, w in enumerate(entry.weights)]


def published() -> dict[str, list[WeightsEntry]]:
    """Every registry entry that has weights -> its weights entries."""
    from ..registry import get_entry, list_models

    return {name: weights_entries(name) for name in list_models() if get_entry(name).has_weights}


# ---------------------------------------------------------------------------- environment
def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub uses, read from the environment at call time."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            return value.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def cache_location(weights: WeightsEntry, cache_dir: Optional[Path] = None) -> str:
    """Where hf_hub_download looks for the file (``<rev>`` a commit; refs/<branch> names it)."""
    cache_dir = cache_dir or hub_cache_dir()
    repo_folder = cache_dir / ("models--" + weights.repo_id.replace("/", "--"))
    commit = weights.revision if _COMMIT.match(weights.revision) else "<commit>"
    where = str(repo_folder / "snapshots" / commit / weights.filename)
    if commit == "<commit>":
        where += f" (with {repo_folder / 'refs' / weights.revision} holding that commit)"
    return where


# ---------------------------------------------------------------------------- checks
def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _evict(path: Path, cache_dir: Path) -> list[Path]:
    """Delete a cached file: the snapshot entry and, when it links into blobs/, the blob."""
    removed = []
    cache = cache_dir.resolve()
    target = path.resolve()
    if path.is_symlink():
        path.unlink()
        removed.append(path)
    if target.exists() and cache in target.parents:
        target.unlink()
        removed.append(target)
    return removed


def verify_sha256(path: Union[str, Path], expected: str, *, model: str, weights: Optional[WeightsEntry] = None,
                  cache_dir: Optional[Path] = None) -> Path:
    """Raise ChecksumError (after evicting the file from the hub cache) unless sha256 matches."""
    path = Path(path)
    actual = sha256_file(path)
    if actual == expected.lower():
        return path
    cache_dir = cache_dir or hub_cache_dir()
    in_cache = cache_dir.resolve() in path.parent.resolve().parents  # never delete a user's own file
    removed = _evict(path, cache_dir) if in_cache else []
    fate = ("it was removed from the cache, so it will not be used again" if removed
            else "the file was left in place")
    origin = f" (hub repo {weights.repo_id}, revision {weights.revision})" if weights else ""
    raise ChecksumError(
        f"{model}: checksum mismatch for {path.name}{origin}: sha256 is {actual}, expected {expected}; "
        f"{fate}. The download was corrupted or the file changed: run `nasnetzoo download {model}` to "
        "fetch it again; if the mismatch persists, the published file differs from the registry entry "
        "(report it).")


# ---------------------------------------------------------------------------- download
def _unavailable_message(model: str, weights: WeightsEntry, cache_dir: Path, reason: str) -> str:
    repo_folder = cache_dir / ("models--" + weights.repo_id.replace("/", "--"))
    return (f"{model}: the weights file {weights.filename} (hub repo {weights.repo_id}, revision "
            f"{weights.revision}) {reason}. Pre-fetch it on a machine with network with "
            f"`nasnetzoo download {model}` and copy the folder {repo_folder.name} into this machine's hub "
            f"cache ({cache_dir}; set by HF_HUB_CACHE or HF_HOME), so that the file is at "
            f"{cache_location(weights, cache_dir)}; or load a local copy with "
            f"nasnetzoo.load({model!r}, weights='path/to/{weights.filename}').")


def download_weights(model: str, weights: WeightsEntry, *, force: bool = False) -> Path:
    """Fetch ``weights`` of registry entry ``model`` into the hub cache and check its sha256."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from .. import __version__

    cache_dir = hub_cache_dir()
    offline = is_offline()
    if force and offline:
        raise WeightsUnavailableError(f"{model}: cannot re-download {weights.filename} while HF_HUB_OFFLINE "
                                      "is set; unset it (or drop --force).")
    try:
        path = hf_hub_download(weights.repo_id, weights.filename, revision=weights.revision,
                               cache_dir=str(cache_dir), local_files_only=offline, force_download=force,
                               library_name="nasnetzoo", library_version=__version__)
    except LocalEntryNotFoundError as err:
        reason = ("is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE is set)" if offline
                  else f"is not cached and could not be downloaded ({_first_line(err)}); check the network "
                       "or proxy settings")
        raise WeightsUnavailableError(_unavailable_message(model, weights, cache_dir, reason)) from None
    except RepositoryNotFoundError:
        raise WeightsUnavailableError(
            f"{model}: hub repo {weights.repo_id!r} was not found (or is private: log in with "
            "`hf auth login`); the registry entry names a repository that does not exist.") from None
    except RevisionNotFoundError:
        raise WeightsUnavailableError(
            f"{model}: revision {weights.revision!r} of hub repo {weights.repo_id} was not found; the "
            "registry entry pins a revision that does not exist.") from None
    except EntryNotFoundError:
        raise WeightsUnavailableError(
            f"{model}: hub repo {weights.repo_id} (revision {weights.revision}) has no file "
            f"{weights.filename!r}; the registry entry names a file that does not exist.") from None
    except (HfHubHTTPError, OSError) as err:
        raise WeightsUnavailableError(_unavailable_message(
            model, weights, cache_dir, f"could not be downloaded ({_first_line(err)})")) from None
    return verify_sha256(path, weights.sha256, model=model, weights=weights, cache_dir=cache_dir)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def select_weights(model: str, dataset: Optional[str] = None) -> WeightsEntry:
    """The default weights of ``model`` (for ``dataset`` if given); a clear error when there are none."""
    from ..registry import get_entry

    entry = get_entry(model)
    candidates = weights_entries(entry.name)
    if dataset is not None:
        candidates = [w for w in candidates if (w.dataset or entry.dataset) == dataset]
    if candidates:
        return candidates[0]
    others = ", ".join(published()) or "none yet"
    what = f"{entry.name} has no published weights" + (f" for {dataset}" if dataset else "")
    raise WeightsUnavailableError(
        f"{what} (models with weights: {others}). Load your own with "
        f"nasnetzoo.load({entry.name!r}, weights='file.safetensors'), or convert an official checkpoint "
        "with `nasnetzoo convert`.")


def fetch_pretrained(name: Any, *, dataset: Optional[str] = None, force: bool = False) -> Path:
    """``load(name, pretrained=True)``: the verified local path of ``name``'s default weights."""
    from ..registry import is_model_name

    if not isinstance(name, str) or not is_model_name(name):
        raise ConfigError(f"pretrained=True needs a registry name (see `nasnetzoo list`); {str(name)[:80]!r} "
                          "is a genotype, so pass your own weights with weights='file.safetensors'.")
    from ..registry import get_entry

    entry = get_entry(name)
    return download_weights(entry.name, select_weights(entry.name, dataset), force=force)
