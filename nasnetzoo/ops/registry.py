"""One registry of cell primitives, shared by the zoo's builders and the search supernets.

Ops live in families because the two lineages of NAS cells give the same names different
meanings: in DARTS ``none`` is the zero op, in TF-slim NASNet it is the identity.  A genotype
names its family, and its op names are looked up there.

An op factory is called as ``factory(C_in, C_out, stride, **options)`` and returns an
``nn.Module`` mapping ``(B, C_in, H, W)`` to ``(B, C_out, ceil(H / stride), ceil(W / stride))``.
Builders pass family-specific options (``affine`` for DARTS, ``bn_eps`` for TF ports, ...);
factories ignore the options they do not use.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ..errors import UnknownOpError, did_you_mean

OpFactory = Callable[..., nn.Module]

FAMILIES = ("darts", "nasnet")

_REGISTRY: dict[str, dict[str, OpFactory]] = {family: {} for family in FAMILIES}


def _check_family(family: str) -> None:
    if family not in _REGISTRY:
        raise UnknownOpError(
            f"unknown op family {family!r}; the families are {', '.join(FAMILIES)}.")


def register_op(name: str, factory: Optional[OpFactory] = None, *, family: str = "darts",
                overwrite: bool = False):
    """Register ``factory`` under ``name`` in ``family``; usable as a decorator.

    >>> @register_op("my_conv_3x3")
    ... def my_conv(C_in, C_out, stride, **options):
    ...     return nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False)
    """
    _check_family(family)

    def decorate(fn: OpFactory) -> OpFactory:
        if not overwrite and name in _REGISTRY[family]:
            raise ValueError(f"op {name!r} is already registered in family {family!r}; "
                             "pass overwrite=True to replace it.")
        _REGISTRY[family][name] = fn
        return fn

    return decorate(factory) if factory is not None else decorate


def unregister_op(name: str, *, family: str = "darts") -> None:
    _check_family(family)
    _REGISTRY[family].pop(name, None)


def op_names(family: str = "darts") -> list[str]:
    """The op names known in ``family``, in registration order."""
    _check_family(family)
    return list(_REGISTRY[family])


def get_op_factory(name: str, family: str = "darts") -> OpFactory:
    _check_family(family)
    try:
        return _REGISTRY[family][name]
    except KeyError:
        raise UnknownOpError(
            f"unknown op {name!r} in the {family} family.{did_you_mean(name, _REGISTRY[family])} "
            f"Known ops: {', '.join(_REGISTRY[family])}.") from None


def build_op(name: str, C_in: int, C_out: int, stride: int = 1, *, family: str = "darts",
             **options) -> nn.Module:
    """Instantiate op ``name`` of ``family``."""
    return get_op_factory(name, family)(C_in, C_out, stride, **options)
