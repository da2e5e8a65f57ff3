"""``eval --pretrained``: a published file scored as its publisher scored it.

The transform comes from the chosen file's pretrained cfg (``nasnetzoo.weights.preprocess``); the
printout follows timm's ``validate.py`` (top-1/top-5 and their errors, parameter count, image
size, crop and interpolation) with the publisher's and the paper's figures beside it.

Labels: an ImageFolder numbers its k folders 0..k-1, so a folder whose names are ImageNet synsets
is scored against each synset's own index among the 1000 (a subset included, when asked for with
``--class-map synsets``); folders with other names need a ``--class-map`` file.  Nothing is
scored against the folder's own numbering unless the head has exactly that many classes.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from ..errors import ConfigError
from ..fileio import atomic_write

SYNSET = re.compile(r"^n\d{8}$")
IMAGENET_CLASSES = 1000


@dataclass
class PretrainedEvalResult:
    model: str
    tag: str
    top1: float
    top5: float
    count: int
    param_count: float                  # millions, as timm's validate.py reports it
    img_size: int
    crop_pct: float
    interpolation: str
    preprocessing: str
    classes: str
    publisher: dict = field(default_factory=dict)   # top1/top5/source from the registry's weights entry
    paper: dict = field(default_factory=dict)       # top1/top5/source from the entry's `reported`

    @property
    def top1_err(self) -> float:
        return 100.0 - self.top1

    @property
    def top5_err(self) -> float:
        return 100.0 - self.top5

    def lines(self) -> list[str]:
        out = [f" * Acc@1 {self.top1:.3f} ({self.top1_err:.3f}) Acc@5 {self.top5:.3f} ({self.top5_err:.3f})",
               f"{self.model} [{self.tag}] on {self.count} images ({self.classes}): param_count "
               f"{self.param_count:.2f}M, img_size {self.img_size}, crop_pct {self.crop_pct:g}, "
               f"interpolation {self.interpolation}",
               f"preprocessing: {self.preprocessing}"]
        for label, figures in (("publisher", self.publisher), ("paper", self.paper)):
            out.append(f"{label}: {_figures(figures)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(top1_err=round(self.top1_err, 3), top5_err=round(self.top5_err, 3))
        return row


def _figures(figures: Mapping[str, Any]) -> str:
    parts = [f"{k} {figures[k]:.3f}" for k in ("top1", "top5") if figures.get(k) is not None]
    if not parts:
        return "no figure"
    return "  ".join(parts) + (f"  ({figures['source']})" if figures.get("source") else "")


def _accuracy_from(errors: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: 100.0 - float(errors[f"{key}_err"]) for key in ("top1", "top5") if errors.get(f"{key}_err") is not None}
    if out and errors.get("source"):
        out["source"] = str(errors["source"])
    return out


def write_results(result: PretrainedEvalResult, path: Union[str, Path]) -> Path:
    """``path`` as JSON (``.json``) or one-row CSV (``.csv``), atomically."""
    return write_row(result.as_dict(), path)


def write_row(row: dict, path: Union[str, Path]) -> Path:
    """One result ``row`` to ``path`` as JSON (``.json``) or one-row CSV (``.csv``), atomically."""
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(row, indent=2, sort_keys=True) + "\n"
    elif path.suffix == ".csv":
        flat = {k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()}
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(flat))
        writer.writeheader()
        writer.writerow(flat)
        text = buffer.getvalue()
    else:
        raise ConfigError(f"-o/--out {str(path)!r} must end in .json or .csv.")
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


# ---------------------------------------------------------------------------- labels
def imagenet_synsets() -> Optional[list[str]]:
    """The 1000 ImageNet-1k synsets in class-index order, from timm when it is installed."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    return list(ImageNetInfo("imagenet-1k").label_names())


def read_class_map(path: Union[str, Path]) -> dict[str, Union[int, str]]:
    """A ``--class-map`` file: JSON ``{"folder": index or synset}``, or lines ``folder index-or-synset``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--class-map {str(path)!r} does not exist; give a JSON or text file mapping each "
                          "folder name to an ImageNet index or synset, or `--class-map synsets`.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--class-map {path}: not valid JSON ({err}).") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"--class-map {path}: expected a JSON object {{folder: index}}.")
        return {str(k): v for k, v in mapping.items()}
    mapping = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        if len(parts) != 2:
            raise ConfigError(f"--class-map {path} line {number}: expected 'folder index-or-synset', got {line!r}.")
        mapping[parts[0]] = int(parts[1]) if parts[1].isdigit() else parts[1]
    return mapping


def folder_targets(classes: Sequence[str], num_classes: int, class_map: Optional[Union[str, Path]],
                   synsets: Optional[list[str]]) -> list[int]:
    """The head's class index for each ImageFolder class (in the folder's order); a folder that
    would be scored against the wrong labels is refused with one line."""
    classes = list(classes)
    if class_map is None:
        if len(classes) != num_classes:
            raise ConfigError(
                f"the folder has {len(classes)} classes but the weights' head has {num_classes}; an ImageFolder "
                "numbers its folders 0..k-1, so a subset would be scored against the wrong labels. For a subset "
                "whose folders are ImageNet synsets pass `--class-map synsets`; otherwise a --class-map file "
                "(folder -> class index).")
        if num_classes == IMAGENET_CLASSES and not all(SYNSET.match(c) for c in classes):
            bad = next(c for c in classes if not SYNSET.match(c))
            raise ConfigError(f"folder {bad!r} is not an ImageNet synset (nXXXXXXXX); pass a --class-map file "
                              "mapping each folder to its ImageNet class index.")
        if synsets is not None and num_classes == IMAGENET_CLASSES and classes != synsets:
            raise ConfigError("the folder's 1000 synsets are not ImageNet-1k's; pass a --class-map file.")
        return list(range(len(classes)))
    if str(class_map) == "synsets":
        mapping: dict[str, Union[int, str]] = {c: c for c in classes}
    else:
        mapping = read_class_map(class_map)
    targets = []
    for name in classes:
        if name not in mapping:
            raise ConfigError(f"folder {name!r} is not in the --class-map; add it (folder -> class index or synset).")
        value = mapping[name]
        if isinstance(value, str):
            if synsets is None:
                raise ConfigError(f"--class-map names synsets ({value!r}); their ImageNet indices come from timm's "
                                  "synset list: install timm, or map folders to class indices.")
            if value not in synsets:
                raise ConfigError(f"{value!r} (folder {name!r}) is not one of ImageNet-1k's 1000 synsets.")
            value = synsets.index(value)
        if not (isinstance(value, int) and 0 <= value < num_classes):
            raise ConfigError(f"--class-map gives folder {name!r} class {value!r}; the head has classes "
                              f"0..{num_classes - 1}.")
        targets.append(value)
    return targets


# ---------------------------------------------------------------------------- evaluation
def _dataset(cfg: Mapping[str, Any], data_dir: Path, transform):
    from torchvision import datasets

    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {str(data_dir)!r} is not a folder; give the ImageNet validation set as "
                          "an ImageFolder (one folder per synset).")
    dataset = cfg.get("dataset")
    if dataset in ("cifar10", "cifar100"):
        kind = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
        try:
            return kind(str(data_dir), train=False, download=False, transform=transform)
        except RuntimeError:
            raise ConfigError(f"{dataset} is not in {data_dir} (torchvision's layout); fetch it with "
                              f"`nasnetzoo eval ... --download` or torchvision.") from None
    root = data_dir / "val" if (data_dir / "val").is_dir() else data_dir
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"{root} is not an ImageFolder ({str(err).splitlines()[0]}).") from None


def evaluate_pretrained(arch: str, data_dir: Union[str, Path], *, tag: Optional[str] = None,
                        input_size: Optional[int] = None, crop_pct: Optional[float] = None,
                        interpolation: Optional[str] = None, class_map: Optional[Union[str, Path]] = None,
                        batch_size: int = 64, workers: int = 2, device: str = "auto", progress: bool = True,
                        dataset: Optional[str] = None, model: Optional[torch.nn.Module] = None) -> PretrainedEvalResult:
    """Top-1/top-5 of ``arch``'s published weights (``tag``) on ``data_dir``, preprocessed as the
    file's cfg says (``input_size``/``crop_pct``/``interpolation`` override it).  ``model``: an
    already loaded network (tests), else ``nasnetzoo.load(arch, pretrained=True, tag=tag)``."""
    from tqdm.auto import tqdm

    from ..factory import load, pretrained_cfg
    from ..registry import get_entry
    from ..weights.preprocess import preprocessing
    from ..weights.sources import select_source

    source = select_source(get_entry(arch).name, tag=tag)
    cfg = dict(model.pretrained_cfg) if model is not None else pretrained_cfg(source.model, tag=source.tag)
    if dataset is not None and dataset != cfg.get("dataset"):
        raise ConfigError(f"{source.model} [{source.tag}] was trained on {cfg.get('dataset')}, not {dataset}; drop "
                          "--dataset (the weights' own is used).")
    prep = preprocessing(cfg, input_size=input_size, crop_pct=crop_pct, interpolation=interpolation)
    images = _dataset(cfg, Path(data_dir), prep.transform())
    num_classes = int(cfg.get("num_classes") or 0)
    classes = list(getattr(images, "classes", []))
    if hasattr(images, "samples"):   # an ImageFolder: its labels become the head's
        targets = folder_targets(classes, num_classes, class_map, imagenet_synsets() if num_classes == 1000 else None)
        images.target_transform = targets.__getitem__
    if len(images) == 0:
        raise ConfigError(f"{data_dir} holds no images.")
    if model is None:
        model = load(source.model, pretrained=True, tag=source.tag)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers)
    top1 = top5 = count = 0
    with torch.no_grad():
        for images, labels in tqdm(loader, desc=f"eval {source.model} [{source.tag}]", disable=not progress,
                                   leave=False):
            logits = model(images.to(device))
            labels = labels.to(device)
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += int((best[:, 0] == labels).sum())
            top5 += int((best == labels[:, None]).any(dim=1).sum())
            count += int(labels.numel())
    params = sum(p.numel() for p in model.parameters()) / 1e6
    entry = get_entry(source.model)
    described = f"{len(classes)} of {num_classes} classes" if classes else f"{num_classes} classes"
    return PretrainedEvalResult(
        model=source.model, tag=source.tag, top1=100.0 * top1 / count, top5=100.0 * top5 / count, count=count,
        param_count=round(params, 2), img_size=prep.input_size[1], crop_pct=prep.crop_pct,
        interpolation=prep.interpolation, preprocessing=prep.describe(), classes=described,
        publisher=_accuracy_from(source.metrics), paper=_accuracy_from(entry.reported))
