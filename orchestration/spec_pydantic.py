"""Pydantic's validation errors → the loader's messages, each at its spec path.

The model at an error's location is found by walking the section's type along the location, so
a missing `kind:` lists the kinds of the union found there (a quality check is told the
quality-check kinds) and a secret is known by its `Secret` annotation, not by its field name.
"""

import types
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, TypeAdapter, ValidationError

from assets import spec
from orchestration.spec_problems import Path_, Problem


@cache  # one per spec section: building one costs up to 5 ms (unions)
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


def validate(model: Any, value: Any, path: Path_) -> tuple[Any, list[Problem]]:
    """(the validated item or None, the problems of the value at `path`)."""
    try:
        return _adapter(model).validate_python(value), []
    except ValidationError as invalid:
        return None, [translate(model, path, problem, value) for problem in invalid.errors()]


def _unwrap(annotation: Any) -> Any:
    """The type without `Annotated` metadata and without `None` in an optional union."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _member(union: Any, label: str | int) -> Any:
    """The union member pydantic labels `label`: its `kind:` value or its type's name."""
    for member in get_args(union):
        if _is_model(member) and "kind" in member.model_fields and \
                label in get_args(member.model_fields["kind"].annotation):
            return member
        if getattr(member, "__name__", None) == label:
            return member
    return None


def _field(model: type[BaseModel], key: str | int) -> str | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return name
    return None


@cache
def _hints(model: type[BaseModel]) -> dict[str, Any]:
    """A model's field types with forward references (a model defined later) resolved."""
    fields = {name: info.annotation for name, info in model.model_fields.items()}
    try:
        return {**fields, **get_type_hints(model, include_extras=True)}
    except (NameError, TypeError):  # an unresolvable hint: pydantic's own view is the best
        return fields


def locate(root: Any, location: Iterable[str | int]) -> tuple[Any, type[BaseModel] | None, str]:
    """(the type at `location`, the model owning the last field on the way, that field)."""
    annotation, owner, field = _unwrap(root), None, ""
    for part in location:
        if _is_union(annotation):
            annotation = _unwrap(_member(annotation, part))
        elif _is_model(annotation) and (name := _field(annotation, part)) is not None:
            owner, field = annotation, name
            annotation = _unwrap(_hints(annotation)[name])
        elif get_origin(annotation) is dict:
            annotation = _unwrap(get_args(annotation)[1])
        elif get_origin(annotation) is list:
            annotation = _unwrap(get_args(annotation)[0])
        else:
            return None, owner, field
    return annotation, owner, field


def _union_members() -> set[str]:
    """Every `kind:` of every discriminated union in the spec (and the setting labels)."""
    kinds = {"str", "EnvRef"}
    for union in (spec.Connection, spec.TriggerWhen, spec.Alert, spec.Step, spec.QualityCheck):
        kinds |= set(spec.kinds_of(union))
    return kinds


UNION_MEMBERS = _union_members()


def split_location(location: Iterable[str | int], value: Any
                   ) -> tuple[list[str | int], list[str | int]]:
    """(union members pydantic tried, the path in the spec) of an error's location.

    Walks the validated value alongside. At each value, at most one label comes before its
    keys: the `kind:` of a mapping (`sql` in `{kind: sql, sql: …}`), or `str`/`EnvRef` for a
    setting that is not a mapping holding such a key. Every other part is a key or an index of
    the spec, even one spelled like a kind (`python:` in a sql step is that unknown key)."""
    members: list[str | int] = []
    loc: list[str | int] = []
    labelled = False
    for part in location:
        mapping = isinstance(value, dict)
        if not labelled and (
                (mapping and value.get("kind") == part and part in UNION_MEMBERS)
                or (part in ("str", "EnvRef") and not (mapping and part in value))):
            members.append(part)
            labelled = True
            continue
        loc.append(part)
        labelled = False
        if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return members, loc


def translate(model: Any, path: Path_, problem: Mapping[str, Any], value: Any) -> Problem:
    """One pydantic error as a problem at its spec path, saying what to write instead."""
    members, loc = split_location(problem["loc"], value)
    full = (*path, *loc)
    kind, field = problem["type"], str(loc[-1]) if loc else ""
    here, owner, owner_field = locate(model, problem["loc"])
    secret = owner is not None and owner_field == field and field in spec.secret_fields(owner)
    if "str" in members or ("EnvRef" in members and not secret):
        message = "must be text or {env: VARIABLE_NAME}"
    elif kind == "extra_forbidden":
        message = f"unknown key '{field}'; remove it or check its spelling"
    elif secret and kind in ("model_type", "model_attributes_type"):
        message = ("is a secret: write {env: VARIABLE_NAME} and set that variable in the "
                   "environment; a literal value is not accepted")
    elif kind == "union_tag_invalid":
        message = (f"unknown kind {problem['ctx'].get('tag')!r} "
                   f"(known: {problem['ctx'].get('expected_tags')})")
    elif kind == "union_tag_not_found":
        kinds = spec.kinds_of(here) if _is_union(here) else ()
        message = f"missing `kind:` (one of: {', '.join(kinds)})"
    elif kind == "missing":
        message = "is required"
    elif kind == "string_pattern_mismatch" and "owners" in full:
        message = "an owner is an e-mail address or `team:<name>`"
    elif kind == "string_pattern_mismatch":
        message = (f"{problem.get('input')!r} does not match the pattern "
                   f"{problem['ctx'].get('pattern')}")
    elif kind == "literal_error":
        message = f"unknown value; {problem['msg'][0].lower()}{problem['msg'][1:]}"
    else:
        message = problem["msg"].removeprefix("Value error, ")
    return Problem(full, message)
