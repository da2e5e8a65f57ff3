"""Searches that sample architectures and train each one: one pipeline, the proposer its only variable part.

``space`` (the cell spaces: NASNet's, AmoebaNet's, PNAS's), ``child`` (build and train a child),
``executors`` (where children train), ``proposer`` (the interface a strategy implements),
``pipeline`` (dispatch, commits, top-k, genotype), ``plot`` (the rewards plot), ``recipe`` (the
keys every sampled search shares).  The proposers live in their own modules: ``random_search``,
``evolution`` here, NASNet's PPO controller in ``search/rl/proposer.py``; PNAS's progressive search is
``pnas_cells`` (its space), ``pnas_predictor`` (the surrogate), ``pnas`` (the proposer), ``pnas_recipe``
and ``pnas_runner``.
"""
