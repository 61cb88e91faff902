"""The spec's building blocks: the strict base model, names, secrets as environment
references, and the helpers that read kinds and secret fields off a model."""

import codecs
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
def _known_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as "
                         "Europe/Paris or UTC") from None
    return timezone


TimeZone = Annotated[str, AfterValidator(_known_timezone)]
# Dagster accepts an e-mail address or `team:<name>` as an owner.
Owner = Annotated[str, Field(pattern=r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")]


class Model(BaseModel):
    """Strict base: unknown keys are errors, values are never coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EnvRef(Model):
    """A value read from an environment variable at run time (`{env: NAME}`)."""

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


# Secrets accept only an environment reference; plain settings accept either.
Secret = EnvRef
Setting = str | EnvRef


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields typed `Secret` (an environment reference only, unlike a `Setting`): the
    values masked in a script's or command's output; hosts, ports and user names are not."""

    def only_env(annotation: Any) -> bool:
        return (set(get_args(annotation)) or {annotation}) - {type(None)} == {Secret}

    return frozenset(name for name, info in model.model_fields.items()
                     if only_env(info.annotation))


def kind_of(model: type[BaseModel]) -> str:
    """A union member's `kind:` value (its `Literal`), the key registries are looked up by."""
    (kind,) = get_args(model.model_fields["kind"].annotation)
    return kind


def union_members(union: Any) -> tuple[type[BaseModel], ...]:
    """The models of a (possibly `Annotated`) union of spec models, in declaration order."""
    if get_origin(union) is Annotated:
        union = get_args(union)[0]
    return tuple(get_args(union))


def kinds_of(union: Any) -> tuple[str, ...]:
    """The `kind:` values a union accepts: what messages list, derived, never hand-written."""
    return tuple(kind_of(member) for member in union_members(union))


def _known_encoding(encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}; use a Python codec name such as "
                         "utf-8, latin-1 or cp1252") from None
    return encoding


# A Python codec name, checked when the spec loads (files in and out both take one).
Encoding = Annotated[str, AfterValidator(_known_encoding)]
FileType = Literal["csv", "tsv", "psv", "jsonl", "parquet", "xlsx"]


def delimiter_for(file_type: str, delimiter: str | None) -> str:
    """The delimiter given, else the one the file type implies."""
    return delimiter or {"tsv": "\t", "psv": "|"}.get(file_type, ",")
