"""Architecture search: the DARTS-space supernet, the DARTS, PC-DARTS and PARSEC strategies and
NASNet's RL search, all run by ``run_search`` through one strategies table."""

__all__ = ["run_search"]


def __getattr__(name):  # keep `import nasnetzoo.search` light: the pipelines load on first use
    if name == "run_search":
        from .api import run_search

        return run_search
    raise AttributeError(name)
