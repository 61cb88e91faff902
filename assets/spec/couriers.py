"""Couriers: which files to pull from a connection and how they are formatted."""

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from assets.spec.common import Encoding, FileType, Model, Owner, delimiter_for
from assets.templating import is_dated


class FileFormat(Model):
    type: FileType = "csv"
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    header: bool = True
    quote: str = Field(default='"', max_length=1)
    escape: str | None = Field(default=None, max_length=1)
    encoding: Encoding = "utf-8"
    compression: Literal["auto", "none", "gzip"] = "auto"
    sheet: str | None = Field(default=None, description="xlsx only: sheet name, default the first.")
    skip_rows: int = Field(default=0, ge=0)
    max_line_bytes: int = Field(
        default=2_000_000, ge=1_000, le=1_000_000_000,
        description="A longer line (one huge field) is a bad row; raise it for files that "
                    "legitimately carry large values.")

    @property
    def effective_delimiter(self) -> str:
        return delimiter_for(self.type, self.delimiter)


class Courier(Model):
    """Pulls one file pattern or one SQL query from a connection."""

    from_: Annotated[str, Field(alias="from")]
    path: str | None = Field(None, description="File path or glob, templated (dates, params).")
    query: str | None = Field(None, description="SQL for a `sql` connection, templated.")
    format: FileFormat = FileFormat()
    required: bool = Field(True, description="Fail when no file matches.")
    missing_files: Literal["notify_and_continue", "notify_and_stop"] | None = Field(
        None, description="Overrides its courier group's policy for this courier (a courier "
                          "that may go on without its file is not waited for either).")
    description: str | None = None
    owners: list[Owner] | None = None

    @property
    def dated(self) -> bool:
        return is_dated(self.path) or is_dated(self.query)
