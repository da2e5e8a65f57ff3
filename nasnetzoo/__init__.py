"""nasnetzoo: NAS-discovered CNNs, their search pipelines and their deployment."""
from .errors import GenotypeError, NasNetZooError, UnknownModelError
from .genotype import Cell, Edge, Genotype
from .ops import register_op

__version__ = "0.1.0"
