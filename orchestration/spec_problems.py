"""What the spec loader reports: a problem at a spec path, then an error naming file and line."""

from dataclasses import dataclass
from typing import NamedTuple

Path_ = tuple[str | int, ...]


class Problem(NamedTuple):
    """One thing wrong at a path inside the spec; the loader adds the file and the line."""

    path: Path_
    message: str


@dataclass(frozen=True)
class SpecError:
    """One problem of a spec, printed as file:line path: message."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.file}:{self.line}{where} {self.message}"


class SpecInvalid(Exception):
    """Raised with every error of one or more spec files."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        super().__init__(f"invalid workflow spec ({count}):\n" + "\n".join(map(str, errors)))
