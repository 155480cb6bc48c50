"""A report's frozen dataclasses to and from JSON trees: `to_tree` writes one (dataclasses
as objects, tuples as arrays), `pick` reads one key by key, each through its converter."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

# A field left out of the JSON while it is None (the runs that have no such measure).
ABSENT = {"absent_if_none": True}
# A field written as {} while it is None (as `up` writes its hops and history).
EMPTY = {"empty_if_none": True}


def to_tree(value: Any) -> Any:
    """A report's value as a JSON tree: dataclasses as objects, tuples as arrays."""
    if is_dataclass(value) and not isinstance(value, type):
        tree = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("absent_if_none"):
                continue
            tree[f.name] = {} if item is None and f.metadata.get("empty_if_none") else to_tree(item)
        return tree
    if isinstance(value, Mapping):
        return {k: to_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_tree(v) for v in value]
    return value


T = TypeVar("T")


class Tree:
    """A dataclass of a report that writes itself as a JSON tree."""

    def to_dict(self) -> dict[str, Any]:
        tree: dict[str, Any] = to_tree(self)
        return tree


def pick(cls: type[T], data: Mapping[str, Any], **convert: Callable[[Any], Any]) -> T:
    """An instance of `cls` from the keys of `data` it knows (each through its converter);
    a key the data lacks takes the field's default."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: convert.get(k, same)(v) for k, v in data.items() if k in known})


def same(value: Any) -> Any:
    return value


def strings(values: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def maybe(convert: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """A converter for a JSON value that may be {} (not measured) instead of an object."""
    return lambda value: convert(value) if value else None
