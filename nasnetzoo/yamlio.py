"""The one way the project reads and writes YAML (genotypes, recipes, ``zoo.yaml``, run files).

Reading is stricter than ``yaml.safe_load`` in three ways, each a real failure seen on user files:

* anchors and aliases (``&a`` / ``*a``) are refused: nine levels of nine-way aliases expand to
  gigabytes (a "billion laughs"), and none of the project's files needs them;
* a key written twice in one mapping is refused instead of silently keeping the last value;
* a file that is not UTF-8 text is refused with its path instead of a ``UnicodeDecodeError``.

Every refusal is one line naming the file (and the line in it) and raised as the caller's own
error class, so a recipe problem stays a ``RecipeError`` and a genotype problem a ``GenotypeError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml

from .errors import NasNetZooError, describe_os_error

# Deeper than any real file; the pure-Python composer recurses once per level.
MAX_DEPTH = 100


class YamlInputError(NasNetZooError, ValueError):
    """YAML the project refuses to read (aliases, duplicate keys, bad syntax, not UTF-8)."""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` without anchors or aliases, and with duplicate keys refused."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name / *name) "
                           "are not accepted; write the values out in full")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"line {event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _Refused(f"line {line}: key {key!r} is given twice (first on line "
                                       f"{seen[key]}); keep one")
                    seen[key] = line
                except TypeError:  # an unhashable key: construct_mapping reports it
                    continue
        return super().construct_mapping(node, deep=deep)


class _Refused(Exception):
    """Raised inside the loader; turned into the caller's error with the file's name."""


def load_yaml(text: str, source: str = "<text>", error: type[Exception] = YamlInputError) -> Any:
    """Parse ``text``; problems raise ``error`` with one line naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as err:
        raise error(f"{source}: {err}.") from None
    except yaml.MarkedYAMLError as err:
        where = f" (line {err.problem_mark.line + 1})" if err.problem_mark is not None else ""
        raise error(f"{source} is not valid YAML{where}: {err.problem or err.context}.") from None
    except yaml.YAMLError as err:
        raise error(f"{source} is not valid YAML: {' '.join(str(err).split())}.") from None
    except RecursionError:
        raise error(f"{source}: YAML nested too deeply to read.") from None


def read_text(path: Union[str, Path], error: type[Exception] = YamlInputError, what: str = "file") -> str:
    """The text of ``path`` as UTF-8 (a leading BOM is dropped); problems raise ``error`` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise error(f"cannot read {what} {str(path)!r}: {describe_os_error(err)}.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{what} {str(path)!r} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                    f"{err.start}); save it as UTF-8.") from None


def read_yaml(path: Union[str, Path], error: type[Exception] = YamlInputError, what: str = "file") -> Any:
    """Read and parse a YAML file with the rules above."""
    return load_yaml(read_text(path, error, what), f"{what} {str(path)!r}", error)


def dump_yaml(data: Any) -> str:
    """YAML with each node on one line (``[[sep_conv_3x3, 1], [skip_connect, 0]]``), so files stay readable."""

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # the loader refuses aliases, so never write them
            return True

    def depth(value) -> int:
        return 1 + max(map(depth, value), default=0) if isinstance(value, list) else 0

    def represent_list(dumper, value):
        flow = depth(value) <= 2 and not any(isinstance(v, dict) for v in value)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)

    _Dumper.add_representer(list, represent_list)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def dump_plain_yaml(data: Any) -> str:
    """``yaml.safe_dump`` (block style, key order kept), without aliases."""

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
