"""nasnetzoo: NAS-discovered CNNs, their search pipelines and their deployment.

    >>> import nasnetzoo
    >>> nasnetzoo.list_models("*darts*")
    >>> model = nasnetzoo.load("PC-DARTS-ImageNet")          # eval mode, random init
    >>> nasnetzoo.get_genotype("darts_v2")                   # the Genotype object
    >>> nasnetzoo.profile(model)                             # params and MACs
    >>> nasnetzoo.save_pretrained(model, "w.safetensors")     # weights + what load() needs
"""
from .threads import set_openmp_defaults

set_openmp_defaults()   # before anything imports torch: OpenMP reads its wait policy once, at load

from ._version import __version__  # noqa: E402
from .errors import ConfigError, GenotypeError, NasNetZooError, UnknownModelError, UnknownOpError  # noqa: E402
from .factory import load  # noqa: E402
from .genotype import Cell, Edge, Genotype  # noqa: E402
from .ops import build_op, op_names, register_op  # noqa: E402
from .profile import Profile, profile  # noqa: E402
from .registry import get_entry, get_genotype, list_genotypes, list_models  # noqa: E402
from .weights import save_pretrained  # noqa: E402

__all__ = [
    "Cell", "ConfigError", "Edge", "Genotype", "GenotypeError", "NasNetZooError", "Profile",
    "UnknownModelError", "UnknownOpError", "build_op", "get_entry", "get_genotype", "list_genotypes",
    "list_models", "load", "op_names", "profile", "register_op", "save_pretrained", "__version__",
]
