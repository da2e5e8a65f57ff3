"""Recipe files: validated dataclasses read from YAML, with ``--set key=value`` overrides.

The machinery every recipe shares (retrain, gradient search, NASNet RL search, and recipes of
strategies registered from outside): reading a file, checking each key against the dataclass's
fields and types (an unknown or misspelt key is named with the closest valid ones), finite
numbers, choices, and ``key=value`` overrides (``model.C=16`` reaches into a mapping).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .errors import NasNetZooError, did_you_mean
from .yamlio import dump_plain_yaml, load_yaml, read_yaml


class RecipeError(NasNetZooError, ValueError):
    """A recipe file or override that is missing, malformed, misspelt or out of range."""


class RecipeFile:
    """Reading and writing, shared by the retrain and search recipe dataclasses."""

    @classmethod
    def load(cls, path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()):
        """The recipe in ``path`` (the defaults when None) with ``--set key=value`` overrides applied."""
        return apply_overrides(cls() if path is None else read_recipe_file(cls, path), overrides)

    @classmethod
    def from_file(cls, path: Union[str, Path], overrides: Sequence[str] = ()):
        return apply_overrides(read_recipe_file(cls, path), overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return dump_plain_yaml(self.to_dict())


# ---------------------------------------------------------------------------- validation
def _non_finite(value: Any) -> Optional[str]:
    """Where a NaN or infinity hides in ``value`` (a number, list or mapping), e.g. ``"[1]"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, (list, tuple)) \
        else ()
    for key, item in items:
        where = _non_finite(item)
        if where is not None:
            return (f".{key}" if isinstance(value, Mapping) else f"[{key}]") + where
    return None


def require_finite(recipe: Any) -> None:
    """Every number of a recipe dataclass is finite: a NaN or infinite lr, decay or size is refused."""
    for f in dataclasses.fields(recipe):
        where = _non_finite(getattr(recipe, f.name))
        if where is not None:
            raise RecipeError(f"recipe key {f.name + where!r} = {getattr(recipe, f.name)!r} is not a finite "
                              "number; give a finite value.")


def check_choices(recipe: Any, choices: Mapping[str, Sequence[str]]) -> None:
    """Every string-valued key of ``recipe`` named in ``choices`` holds one of its values."""
    for key, allowed in choices.items():
        value = getattr(recipe, key, None)
        if value is not None and value not in allowed:
            hint = did_you_mean(str(value), allowed, n=1)
            raise RecipeError(f"recipe key {key!r} = {value!r} is not one of {', '.join(allowed)}.{hint}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid: Iterable[str], where: str) -> RecipeError:
    valid = list(valid)
    hint = did_you_mean(key, valid)
    return RecipeError(f"unknown recipe key {key!r} in {where}.{hint} Valid keys: {', '.join(valid)}.")


def _coerce(key: str, value: Any, kind: Any, where: str) -> Any:
    """Check ``value`` against the field type; ints are accepted for floats, nothing else converts."""
    def wrong(expected: str) -> RecipeError:
        return RecipeError(f"recipe key {key!r} in {where} must be {expected}, got {value!r} "
                           f"({type(value).__name__}).")

    origin = typing.get_origin(kind) or kind
    if origin is Union:  # Optional[...]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _coerce(key, value, args[0], where)
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise wrong("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if kind is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no unquoted as booleans: amp: off
            return "on" if value else "off"
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        return list(value)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise wrong("a mapping")
        return dict(value)
    return value


def from_mapping(cls: type, data: Mapping[str, Any], where: str = "recipe"):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where} must be a mapping of recipe keys, got {type(data).__name__}.")
    types = _field_types(cls)
    if hasattr(cls, "upgrade_keys"):   # old spellings a recipe class still reads
        data = cls.upgrade_keys(dict(data), where)
    kwargs = {}
    for key, value in data.items():
        if key not in types:
            raise _unknown_key(str(key), types, where)
        kwargs[key] = _coerce(key, value, types[key], where)
    return cls(**kwargs)


_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_recipe_dir() -> Optional[Path]:
    """The recipes that ship with nasnetzoo: inside the installed package (the wheel's
    ``nasnetzoo/recipes``), or the ``recipes/`` folder of a source checkout."""
    for candidate in (_PACKAGE_DIR / "recipes", _PACKAGE_DIR.parent / "recipes"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


def bundled_recipes() -> list[str]:
    folder = bundled_recipe_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def resolve_recipe(value: Union[str, Path]) -> Path:
    """``--recipe`` as a file: an existing path as given, else a bundled recipe by name
    (``smoke_search``, ``smoke_search.yaml`` or ``recipes/smoke_search.yaml``), else the path as
    given (reading it then reports that it does not exist)."""
    path = Path(value)
    if path.is_file():
        return path
    folder = bundled_recipe_dir()
    if folder is not None and (path.parent == Path(".") or path.parent == Path("recipes")):
        bundled = folder / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
        if bundled.is_file():
            return bundled
    return path


def read_yaml_mapping(path: Union[str, Path]) -> dict:
    """The mapping a recipe file holds; a missing, empty, non-YAML or non-mapping file is one clear line."""
    path = resolve_recipe(path)
    if not path.is_file():
        names = bundled_recipes()
        hint = f" Bundled recipes (pass a name): {', '.join(names)}." if names else ""
        raise RecipeError(f"recipe file {str(path)!r} does not exist.{hint}")
    data = read_yaml(path, RecipeError, "recipe file")
    if data is None:   # not the defaults: an empty file is a mistake (a training run on CIFAR-10 surprises)
        raise RecipeError(f"recipe file {path} is empty; write the recipe's keys in it (see recipes/*.yaml), "
                          "or pass one of the bundled recipes.")
    if not isinstance(data, Mapping):
        raise RecipeError(f"{path} must be a mapping of recipe keys, got {type(data).__name__}.")
    return dict(data)


def read_recipe_file(cls: type, path: Union[str, Path]):
    return from_mapping(cls, read_yaml_mapping(path), str(path))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"lr=0.1"`` -> ``("lr", 0.1)``; values are read as YAML (numbers, true/false, lists)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"override {text!r} is not of the form key=value (e.g. --set lr=0.05).")
    try:
        value = load_yaml(raw, f"--set {key}", RecipeError) if raw.strip() else ""
    except RecipeError:   # not YAML: the text itself
        value = raw
    return key, value


def apply_overrides(recipe, overrides: Sequence[str]):
    """Apply ``key=value`` strings (``model.C=16`` reaches into the ``model`` mapping)."""
    if not overrides:
        return recipe
    data = dataclasses.asdict(recipe)
    types = _field_types(type(recipe))
    for text in overrides:
        key, value = parse_assignment(text)
        head, dot, rest = key.partition(".")
        if head not in types and not dot and key in getattr(type(recipe), "moved_keys", dict)():
            data[key] = value   # an old spelling: from_mapping reads it (upgrade_keys)
            continue
        if head not in types:
            raise _unknown_key(head, types, f"--set {text}")
        if dot:
            if typing.get_origin(types[head]) is not dict and types[head] is not dict:
                raise RecipeError(f"--set {text}: recipe key {head!r} is not a mapping; use --set {head}=VALUE.")
            data[head] = {**(data[head] or {}), rest: value}
        else:
            data[head] = value
    return from_mapping(type(recipe), data, "--set")


__all__ = ["RecipeError", "RecipeFile", "apply_overrides", "check_choices", "from_mapping",
           "parse_assignment", "read_recipe_file", "read_yaml_mapping", "require_finite"]
