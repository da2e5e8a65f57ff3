"""Search studies: several strategies, several search seeds, a random baseline of the same space,
every found cell through one proxy retrain, and one report of how stable, how good and how costly
each strategy is (``docs/study.md``).

    from nasnetzoo.study import run_study
    result = run_study("recipes/smoke_study.yaml", out="runs/study1")      # study.md, study.json, plots/
    result = run_study(None, resume="runs/study1")                          # continue a killed study

Modules, each with one job: ``recipe`` (the study recipe and the frozen recipes it runs), ``cell``
(one cell: search, retrain, params and MACs, each stage resumable), ``runner`` (the study directory
and the executors), ``stats`` (mean, std, bootstrap interval, cell similarity, collapse),
``report`` and ``plots``.
"""

__all__ = ["StudyRecipe", "run_study"]


def __getattr__(name):  # keep `import nasnetzoo.study` light: the pipelines load on first use
    if name == "run_study":
        from .runner import run_study

        return run_study
    if name == "StudyRecipe":
        from .recipe import StudyRecipe

        return StudyRecipe
    raise AttributeError(name)
