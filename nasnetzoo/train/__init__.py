"""Training engine, data and recipes (retraining; also the base of the search pipelines).

Modules, each with one job, so other loops (search) compose them:

* ``recipe``: the validated ``Recipe`` dataclass, YAML files and ``--set key=value`` overrides;
* ``data``: CIFAR-10/100 (torchvision), ImageNet (ImageFolder), the embedded ``digits`` set,
  DataLoader and on-device tensor loaders; ``augment``: cutout and batched GPU augmentation;
* ``optim``: SGD/AdamW and the cosine / step / linear schedules with warm-up;
* ``engine``: ``Trainer`` (one optimizer step, an epoch, evaluation), drop-path schedules;
* ``checkpoint``: atomic saves and RNG states; ``distributed``: torchrun / DDP helpers;
* ``envelope``: the run directory every run loop shares (lock, one run per directory, exact
  resume, kill-safe commits, metrics log, SIGTERM), used by retraining and both searches;
* ``runner``: ``train(recipe, arch, out=...)`` writes a run directory; ``evaluate``: top-1/top-5;
* ``artifacts``: inference weights (safetensors with the model config) and the load call.
"""
from .recipe import Recipe, RecipeError, load_recipe

__all__ = ["Recipe", "RecipeError", "load_recipe", "train", "evaluate_weights"]


def __getattr__(name):  # keep `import nasnetzoo` light: the engine loads on first use
    if name == "train":
        from .runner import train

        return train
    if name == "evaluate_weights":
        from .evaluate import evaluate_weights

        return evaluate_weights
    raise AttributeError(name)
