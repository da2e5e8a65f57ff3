"""Retraining: the training engine, its recipe and runner, evaluation and the weights a run leaves.

Modules, each with one job:

* ``recipe``: the validated ``Recipe`` dataclass, YAML files and ``--set key=value`` overrides;
* ``engine``: ``Trainer`` (one optimizer step, an epoch, evaluation), drop-path schedules; the
  sample-based searches train their children with it;
* ``runner``: ``train(recipe, arch, out=...)`` writes a run directory; ``evaluate``: top-1/top-5;
* ``artifacts``: inference weights (safetensors with the model config) and the load call.

What every pipeline shares moved out: the run envelope, checkpoints, progress, distributed set-up
and optimizers to :mod:`nasnetzoo.runs` (``train.envelope``, ``train.checkpoint``, ``train.optim``
and ``train.progress`` still import from there), datasets and augmentation to
:mod:`nasnetzoo.data` (``nasnetzoo.data.datasets``, ``nasnetzoo.data.augment``).
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
