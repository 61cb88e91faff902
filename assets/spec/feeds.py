"""Feeds: domain tables standardised from couriers' files with semantic tags."""

import re
from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from assets.spec.common import NAME_PATTERN, Model, Owner
from assets.spec.tables import QualityCheck

SemanticTag = Literal[
    "text", "id", "email", "phone", "name", "given_name", "surname", "full_name",
    "postal_code", "date", "datetime", "birthdate", "gender",
    "integer", "decimal", "boolean", "country", "state", "upper", "lower",
]


Percent = Annotated[str, Field(pattern=r"^\d{1,3}(\.\d+)?%$")]
TEXT_RESULT_TAGS = ("text", "id", "email", "phone", "name", "given_name", "surname", "full_name",
                    "postal_code", "country", "state", "upper", "lower", "gender")


def percent(value: str) -> float:
    """`5%` as the fraction 0.05."""
    return float(value.rstrip("%")) / 100


class ColumnMapping(Model):
    source: str | None = Field(None, description="Source column; default the domain column name.")
    tag: SemanticTag = "text"
    required: bool = Field(False, description="The source column must exist in every file "
                                              "(the default unless `optional: true`).")
    optional: bool = Field(False, description="A file may lack the source column: the column "
                                              "is NULL and the load's metadata says so.")
    on_invalid: Literal["null", "keep", "reject", "fail"] = Field(
        "null", description="A value the tag cannot standardise: NULL, keep the trimmed raw "
                            "value, reject the row to stagecoach.rejects, or fail the load.")
    keep_raw: bool = Field(False, description="Also load the trimmed raw value as <column>_raw.")
    max_invalid: Percent | None = Field(
        None, description="The `standardisation` check fails above this share of invalid "
                          "values, e.g. 5%.")
    not_null: bool = Field(False, description="Rows whose value is null fail the load.")
    formats: list[str] | None = Field(
        None, description="date/datetime: strptime formats tried in order."
    )
    default_country_code: str | None = Field(
        None, pattern=r"^\d{1,3}$", description="phone: calling code for national numbers "
                                                "(its main region; prefer default_region)."
    )
    lowercase_local: bool = Field(True, description="email: lower-case the part before @.")
    default_region: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="phone, postal_code, state: ISO region (FR) of "
                                                "national numbers and codes.")
    region_from: str | None = Field(
        None, pattern=NAME_PATTERN, description="phone, postal_code, state: a column of the row "
                                                "holding its country; default_region otherwise.")
    description: str | None = None

    @model_validator(mode="after")
    def _keep_needs_text(self) -> Self:
        if self.on_invalid == "keep" and self.tag not in TEXT_RESULT_TAGS:
            raise ValueError(f"on_invalid: keep needs a text tag, and `{self.tag}` is typed; "
                             "use `keep_raw: true` to keep the raw value beside it")
        if self.optional and self.required:
            raise ValueError("a column cannot be both `required` and `optional`")
        return self


class StandardisationCheck(Model):
    blocking: bool = Field(default=False, description="A failed `standardisation` check "
                                                      "stops the steps downstream (default: "
                                                      "a warning).")


class DomainTable(Model):
    """A feed: the courier's rows mapped to domain columns and standardised by semantic tag."""

    from_: Annotated[str, Field(alias="from")]
    columns: dict[str, ColumnMapping] = Field(min_length=1)
    primary_key: list[str] | None = None
    quality: list[QualityCheck] = Field(default_factory=list, description="Data-quality "
                                        "checks run after each load, as asset checks.")
    bad_rows: Literal["fail", "reject", "skip"] = Field(
        "fail", description="Rows that cannot be loaded (wrong field count, bad encoding, a "
                            "line over max_line_bytes, a null in a not-null column, a repeated "
                            "primary key): fail the load naming file and line; reject them to "
                            "stagecoach.rejects and load the rest; or skip them (counted).")
    empty_file: Literal["fail", "zero_rows", "keep_table"] = Field(
        "fail", description="A file with nothing in it (0 bytes, or only a byte order mark and "
                            "blank space): fail the load, load it as zero rows, or keep the "
                            "table as it is.")
    max_shrink: Percent = Field(
        "90%", description="Refuse a load that would take the table (or partition) down by more "
                           "than this share of its rows; the previous rows stay.")
    standardisation: StandardisationCheck = Field(default_factory=StandardisationCheck)
    description: str | None = None
    owners: list[Owner] | None = None

    @field_validator("columns")
    @classmethod
    def _column_names(cls, columns: dict[str, ColumnMapping]) -> dict[str, ColumnMapping]:
        for name in columns:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"column name {name!r} must match {NAME_PATTERN}")
        return columns

    @field_validator("columns")
    @classmethod
    def _regions_from_columns(cls, columns: dict[str, ColumnMapping]
                              ) -> dict[str, ColumnMapping]:
        for name, mapping in columns.items():
            if mapping.region_from and mapping.region_from not in columns:
                raise ValueError(f"column {name!r}: region_from {mapping.region_from!r} is not "
                                 f"a column of this table (columns: {', '.join(columns)})")
        return columns
