"""nasnetzoo: NAS-discovered CNNs, their search pipelines and their deployment.

    >>> import nasnetzoo
    >>> nasnetzoo.list_models("*darts*")
    >>> model = nasnetzoo.load("PC-DARTS-ImageNet")          # eval mode, random init
    >>> nasnetzoo.get_genotype("darts_v2")                   # the Genotype object
    >>> nasnetzoo.profile(model)                             # params and MACs
    >>> nasnetzoo.save_pretrained(model, "w.safetensors")     # weights + what load() needs
"""
from ._version import __version__
from .errors import ConfigError, GenotypeError, NasNetZooError, UnknownModelError, UnknownOpError
from .factory import load
from .genotype import Cell, Edge, Genotype
from .ops import build_op, op_names, register_op
from .profile import Profile, profile
from .registry import get_entry, get_genotype, list_genotypes, list_models
from .weights import save_pretrained

__all__ = [
    "Cell", "ConfigError", "Edge", "Genotype", "GenotypeError", "NasNetZooError", "Profile",
    "UnknownModelError", "UnknownOpError", "build_op", "get_entry", "get_genotype", "list_genotypes",
    "list_models", "load", "op_names", "profile", "register_op", "save_pretrained", "__version__",
]
