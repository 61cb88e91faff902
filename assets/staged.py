"""What a courier hands its feed: the files it staged and how to read them.

The courier writes a `Manifest` next to the files (JSON, replaced atomically); the feed and
forwarding activations read it back as the same typed model, so defaults live in one place.
"""

from typing import Literal

from pydantic import Field

from assets import spec


class StagedFormat(spec.FileFormat):
    """The courier's format as the staged files read: an xlsx sheet becomes CSV whose lines
    are still reported as the sheet's rows, and a file DuckDB cannot decode is transcoded to
    UTF-8 (its original encoding kept for messages)."""

    converted_from: Literal["xlsx"] | None = None
    sheet_skip_rows: int = Field(default=0, ge=0)
    source_encoding: str | None = None


class StagedFile(spec.Model):
    """One staged file: where it is now, what it was when it arrived, where it came from."""

    path: str
    source: str
    size: int
    original: str | None = None  # the file as it arrived (forwarded as is), before _normalise
    name: str | None = None  # its name at the source
    rows: int | None = None  # a query courier's row count


class Manifest(spec.Model):
    """A courier's files of one run (and partition) and how to read them."""

    files: list[StagedFile]
    format: StagedFormat
    partition: str | None = None
