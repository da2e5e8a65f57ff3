"""What every pipeline shares to own and continue a run directory (retraining, the searches, yours).

Modules, each with one job:

* ``envelope``: :class:`~.envelope.Run` (lock, one run per directory, exact resume, kill-safe
  commits, SIGTERM), the kinds of run (:class:`~.envelope.RunKind`, declared by each pipeline with
  :func:`~.envelope.register_run_kind`) and the one check of resume arguments;
* ``checkpoint``: the checkpoint format (atomic saves, the weights-only reader) and RNG states;
* ``progress``: the metrics log (JSON lines) and the progress bar;
* ``distributed``: torchrun / DDP set-up and collectives;
* ``optim``: optimizers, their state on resume and the learning-rate schedules.

A pipeline from outside the package uses them as the built-in ones do::

    from nasnetzoo.runs.envelope import Run, RunKind, register_run_kind
    MINE = register_run_kind(RunKind("mine", noun="my run", checkpoint="checkpoint.pt"))
    with Run(MINE, "runs/m1", recipe={"name": "m1"}) as run:
        ...
"""
