"""One registry per family of spec kinds (connections, delivery destinations, alert channels).

An entry ties a spec model to its builder; its kind and its secret fields are read from the
model (the `kind` Literal, the fields typed `Secret`). Kind lists in messages, dispatch on a
model's type and secret-field sets all derive from here and the spec's unions, so adding a kind
touches its spec model, its entry, its resource module and its tests, nothing else.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from assets import spec

Builder = TypeVar("Builder")


@dataclass(frozen=True)
class Entry(Generic[Builder]):
    """A spec model and what builds it (a resource factory, a channel factory, a sender)."""

    model: type[BaseModel]
    build: Builder

    @property
    def kind(self) -> str:
        return spec.kind_of(self.model)

    @property
    def secrets(self) -> frozenset[str]:
        return spec.secret_fields(self.model)


class Registry(Generic[Builder]):
    """The entries of one family, checked against the spec union they must cover."""

    def __init__(self, family: str, union: Any, entries: Iterable[Entry[Builder]]):
        self.family, self.union = family, union
        self.entries = {entry.model: entry for entry in entries}

    @property
    def kinds(self) -> tuple[str, ...]:
        return spec.kinds_of(self.union)

    def entry(self, item: BaseModel) -> Entry[Builder]:
        """The entry of a spec item; a kind without one is a programming error, named."""
        try:
            return self.entries[type(item)]
        except KeyError:
            raise TypeError(f"no {self.family} builder for kind "
                            f"{getattr(item, 'kind', type(item).__name__)!r}; add an entry to "
                            f"its registry") from None

    def build(self, item: BaseModel) -> Builder:
        return self.entry(item).build

    def problems(self) -> list[str]:
        """Union members without an entry and entries without a union member."""
        members = set(spec.union_members(self.union))
        return ([f"{self.family} kind {spec.kind_of(m)!r} ({m.__name__}) has no registry entry"
                 for m in spec.union_members(self.union) if m not in self.entries] +
                [f"{self.family} registry entry {m.__name__} is not in the spec union"
                 for m in self.entries if m not in members])
