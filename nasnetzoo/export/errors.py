"""Errors of the deployment tools; all are ``NasNetZooError``s, so the CLI prints them in one line."""
from __future__ import annotations

from ..errors import ConfigError, NasNetZooError


class ExportError(NasNetZooError):
    """An export that cannot be done as asked (bad format, conflicting options, unsupported graph)."""


class ExportVerificationError(ExportError):
    """The exported graph does not compute what the PyTorch model computes, within the tolerance."""


class NotTensorRTReadyError(ExportError):
    """A graph that the TensorRT ONNX parser would reject or read differently from PyTorch."""


class MissingDependencyError(NasNetZooError, ImportError):
    """An optional package (onnx, onnxruntime, onnxslim, matplotlib) that a command needs."""


def require(module: str, purpose: str, package: str | None = None, extra: str = "export"):
    """Import ``module`` or raise a one-line error that says which package (and which of
    nasnetzoo's extras) installs it.  The error's ``name`` is the module, as an ImportError's is."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = package or module
        err = MissingDependencyError(
            f"{purpose} needs the {pkg!r} package, which is not installed; install it with "
            f"pip install -c constraints.txt {pkg}  (or pip install 'nasnetzoo[{extra}]').")
        err.name = module
        raise err from None


__all__ = ["ConfigError", "ExportError", "ExportVerificationError", "MissingDependencyError",
           "NotTensorRTReadyError", "require"]
