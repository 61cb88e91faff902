"""Activations: query results delivered as files or mail, sealed, with their history."""

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from assets.spec.common import Encoding, FileType, Model, Owner, delimiter_for


class OutputFile(Model):
    """How the delivered file is written: Data Destination's file options."""

    type: FileType = "csv"
    name: str | None = Field(
        default=None, description="Templated file name, e.g. partner_{{ ds_nodash }}.txt. "
        "Required for a query; when forwarding a courier's files, blank keeps their names.")
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    header: bool = True
    quoting: Literal["minimal", "all", "nonnumeric", "none"] = Field(
        default="minimal", description="Quote fields only where needed, always, non-numbers, or "
        "never (then delimiters in values are escaped with a backslash).")
    line_suffix: str = Field(default="", max_length=8, description="Characters appended to every "
                                                                  "line, e.g. '|' or '\\r'.")
    line_ending: Literal["lf", "crlf"] = "lf"
    encoding: Encoding = Field(default="utf-8",
                               description="Any Python codec, e.g. latin-1, cp1252.")
    encoding_errors: Literal["fail", "replace"] = Field(
        default="fail", description="A character the encoding cannot hold fails the run (naming "
        "the row), or becomes '?'.")

    @property
    def effective_delimiter(self) -> str:
        return delimiter_for(self.type, self.delimiter)


class GpgSeal(Model):
    recipients: list[str] = Field(
        min_length=1, description="Public key files (ASCII-armoured or binary), relative to "
                                  "the spec; the file is encrypted to every one of them.")
    armor: bool = Field(False, description="ASCII-armoured output (.asc) instead of binary.")


class Seal(Model):
    """Encryption, then zip, then the md5 of what is sent (the extract tool's order)."""

    gpg: GpgSeal | None = None
    zip: bool = False
    zip_name: str | None = Field(default=None,
                                 description="Templated; default the file name + .zip")


class MailDelivery(Model):
    """For `smtp` destinations: who gets the file and how."""

    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)
    subject: str = "{{ file_name }}"
    body: str = "Attached: {{ file_name }} ({{ rows }} rows, md5 {{ md5 }})."
    mode: Literal["attach", "embed", "link"] = Field(
        "attach", description="Attach the file, put it in the body, or send a link to the "
                              "archived copy; above the size limit a link is sent.")
    max_attachment_mb: float = Field(5, gt=0)


class Activation(Model):
    """Delivers a query's result, or forwards a courier's files, to one or more destinations."""

    query: str | None = None
    courier: str | None = Field(None, description="Forward this courier's files as they are.")
    to: str | list[str] = Field(description="Destination connection(s): folder, sftp, ftp, "
                                            "smb, s3 or smtp.")
    path: str = Field("", description="Folder under the destination, templated.")
    file: OutputFile = OutputFile()
    seal: Seal = Seal()
    empty: Literal["skip", "send", "fail"] = Field(
        "skip", description="No rows (headers excluded): send nothing and say so, send the "
                            "empty file, or fail the run.")
    overwrite: bool = True
    mail: MailDelivery | None = None
    description: str | None = None
    owners: list[Owner] | None = None

    @property
    def destinations(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)
