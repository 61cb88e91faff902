"""Databases and queries: SQL tables built in the warehouse, with their quality checks."""

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from assets.spec.common import NAME_PATTERN, Model, Name, Owner
from assets.spec.groups import Duration


class QualityBase(Model):
    name: Name | None = Field(None, description="Default: <kind>[_<column>].")
    blocking: bool = Field(True, description="A failure stops the steps downstream of the "
                                             "table (Dataiku's run-depending-on-a-check).")
    description: str | None = None


class RowCountCheck(QualityBase):
    kind: Literal["row_count"]
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)


class NotNullCheck(QualityBase):
    kind: Literal["not_null"]
    columns: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=1)


class UniqueCheck(QualityBase):
    kind: Literal["unique"]
    columns: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=1)


class AcceptedValuesCheck(QualityBase):
    kind: Literal["accepted_values"]
    column: Annotated[str, Field(pattern=NAME_PATTERN)]
    values: list[str | int | float | bool] = Field(min_length=1)


class FreshnessCheck(QualityBase):
    kind: Literal["freshness"]
    column: Annotated[str, Field(pattern=NAME_PATTERN)] = Field(
        description="A timestamp column (UTC when it has no zone).")
    max_age: Duration


class SqlCheck(QualityBase):
    kind: Literal["sql"]
    name: Name  # pyright: ignore[reportIncompatibleVariableOverride]: a SQL check is named
    sql: str = Field(description="Returns the number of failing rows: 0 passes.")


QualityCheck = Annotated[RowCountCheck | NotNullCheck | UniqueCheck | AcceptedValuesCheck
                         | FreshnessCheck | SqlCheck, Field(discriminator="kind")]


class SqlTable(Model):
    sql: str | None = None
    quality: list[QualityCheck] = Field(default_factory=list, description="Data-quality "
                                        "checks run after each build, as asset checks.")
    sql_file: str | None = Field(None, description="Path of a .sql file, relative to the spec.")
    depends_on: list[str] = Field(
        default_factory=list,
        description="Extra upstream tables (schema.table) the SQL does not name literally.",
    )
    description: str | None = None
    owners: list[Owner] | None = None


class Database(Model):
    tables: dict[Name, SqlTable] = Field(min_length=1)
    description: str | None = None
    owners: list[Owner] | None = None


class QueryChecks(Model):
    min_rows: int | None = Field(default=None, ge=0)
    max_rows: int | None = Field(default=None, ge=0)


class Query(SqlTable):
    """A query or segment: a SQL result set materialised as a table."""

    checks: QueryChecks = QueryChecks()
    preview_rows: int = Field(10, ge=0, le=100)
