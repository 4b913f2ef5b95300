"""A coder that encodes a NamedTuple as the plain tuple of its fields.

Beam's default coder (FastPrimitivesCoder) encodes plain tuples, dicts and
strings natively but falls back to pickling for a NamedTuple, whole: several
times slower on a replay's hot path, and larger in state. `NamedTupleCoder`
fills that gap; `fleetstream.transforms.coders` registers it for the product's
types.

No upstream issue is cited for this gap. TODO: remove once Beam's default coder encodes
a NamedTuple field by field instead of pickling it (then drop the registrations in
`fleetstream.transforms.coders` too; the encoded bytes differ, so only with a fresh job
state, not across a savepoint).
"""
from __future__ import annotations

from typing import Any, Generic, TypeVar

from apache_beam import coders

T = TypeVar("T", bound=tuple)


class NamedTupleCoder(coders.Coder, Generic[T]):
    """Encodes a NamedTuple of type `cls` as the plain tuple of its fields."""

    def __init__(self, cls: type[T]) -> None:
        self._cls = cls
        self._fields = coders.FastPrimitivesCoder()

    def encode(self, value: T) -> bytes:
        return self._fields.encode(tuple(value))

    def decode(self, encoded: bytes) -> T:
        return self._cls._make(self._fields.decode(encoded))  # type: ignore[attr-defined]

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> Any:
        return self._cls

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._cls is self._cls  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._cls))
