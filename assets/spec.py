"""The typed workflow spec: what every factory in assets/ and sensors/ is built from.

orchestration/ parses YAML into these models (with file and line for every error); nothing
below it ever sees a raw dict. Secrets are never values here, only environment-variable names.
"""

from __future__ import annotations

import codecs
import re
from datetime import date
from typing import Annotated, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from assets.templating import is_dated

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


def delimiter_for(file_type: str, delimiter: str | None) -> str:
    """The delimiter given, else the one the file type implies."""
    return delimiter or {"tsv": "\t", "psv": "|"}.get(file_type, ",")


# ---------------------------------------------------------------- connections


class Retried(Model):
    """Connection operations (login, listing, each transfer, a source query) retried on
    transient faults: refused, reset or timed-out connections and the server's temporary codes.
    A refusal a retry cannot fix (wrong password, missing file, bad checksum) fails at once."""

    retries: int = Field(3, ge=0, le=10, description="Further attempts after a transient "
                                                     "fault; 0 turns retries off.")
    backoff_seconds: float = Field(1.0, ge=0, le=300, description="Wait before the first "
                                                                  "retry, doubled each time.")


class FolderConnection(Retried):
    kind: Literal["folder"]
    path: str = Field(description="Folder path; relative paths are relative to the spec file.")
    description: str | None = None


class SftpConnection(Retried):
    kind: Literal["sftp"]
    host: Setting
    port: int = Field(22, ge=1, le=65535)
    username: Setting
    password: Secret | None = None
    private_key_path: Setting | None = None
    private_key_passphrase: Secret | None = None
    known_hosts: Setting | None = Field(
        None, description="known_hosts file; default ~/.ssh/known_hosts. Host keys are checked."
    )
    host_key: Setting | None = Field(
        None, description="The server's host key pinned ('ssh-ed25519 AAAA…', a known_hosts "
        "line without the host): only this key is accepted, known_hosts is not read.")
    base_path: str = "."
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class S3Connection(Retried):
    kind: Literal["s3"]
    bucket: Setting
    prefix: str = ""
    region: Setting | None = None
    endpoint_url: Setting | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    description: str | None = None


class FtpConnection(Retried):
    kind: Literal["ftp"]
    host: Setting
    port: int = Field(21, ge=1, le=65535)
    username: Setting
    password: Secret | None = None
    tls: bool = Field(False, description="Explicit FTPS (AUTH TLS, encrypted data channel).")
    ca_file: Setting | None = Field(None, description="CA bundle to check the server's "
                                                      "certificate; default the system's.")
    verify_tls: bool = Field(True, description="false: encrypt without checking the server's "
                                               "certificate (explicit opt-out).")
    base_path: str = "."
    passive: bool = True
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class SmbConnection(Retried):
    kind: Literal["smb"]
    host: Setting
    port: int = Field(445, ge=1, le=65535)
    share: Setting
    username: Setting
    password: Secret | None = None
    base_path: str = Field("", description="Folder inside the share.")
    encrypt: bool = Field(False, description="Require SMB3 encryption.")
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class SmtpConnection(Model):
    """A mail server: activations send their file as an attachment, in the body, or a link."""

    kind: Literal["smtp"]
    host: Setting
    port: int = Field(587, ge=1, le=65535)
    username: Setting | None = None
    password: Secret | None = None
    security: Literal["starttls", "ssl", "none"] = "starttls"
    ca_file: Setting | None = None
    verify_tls: bool = Field(True, description="false: encrypt without checking the server's "
                                               "certificate (explicit opt-out).")
    from_address: Setting
    timeout_seconds: float = Field(30, gt=0)
    description: str | None = None


class SqlConnection(Retried):
    kind: Literal["sql"]
    url: Secret = Field(description="SQLAlchemy URL; it usually holds a password, so env only.")
    description: str | None = None


FILE_KINDS = ("folder", "sftp", "ftp", "smb", "s3")  # connections that hold files
Connection = Annotated[
    FolderConnection | SftpConnection | S3Connection | FtpConnection | SmbConnection
    | SmtpConnection | SqlConnection,
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- couriers


class FileFormat(Model):
    type: Literal["csv", "tsv", "psv", "jsonl", "parquet", "xlsx"] = "csv"
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    header: bool = True
    quote: str = Field('"', max_length=1)
    escape: str | None = Field(None, max_length=1)
    encoding: str = "utf-8"
    compression: Literal["auto", "none", "gzip"] = "auto"
    sheet: str | None = Field(None, description="xlsx only: sheet name, default the first.")
    skip_rows: int = Field(0, ge=0)
    max_line_bytes: int = Field(
        2_000_000, ge=1_000, le=1_000_000_000,
        description="A longer line (one huge field) is a bad row; raise it for files that "
                    "legitimately carry large values.")

    @property
    def effective_delimiter(self) -> str:
        return delimiter_for(self.type, self.delimiter)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r}; use a Python codec name such as "
                             "utf-8, latin-1 or cp1252") from None
        return encoding


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


# ---------------------------------------------------------------- feeds / domain tables

SemanticTag = Literal[
    "text", "id", "email", "phone", "name", "postal_code", "date", "datetime",
    "integer", "decimal", "boolean", "country", "upper", "lower",
]


class ColumnMapping(Model):
    source: str | None = Field(None, description="Source column; default the domain column name.")
    tag: SemanticTag = "text"
    required: bool = Field(False, description="The source column must exist in every file.")
    not_null: bool = Field(False, description="Rows whose value is null fail the load.")
    formats: list[str] | None = Field(
        None, description="date/datetime: strptime formats tried in order."
    )
    default_country_code: str | None = Field(
        None, pattern=r"^\d{1,3}$", description="phone: calling code for national numbers."
    )
    description: str | None = None


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
    description: str | None = None
    owners: list[Owner] | None = None

    @field_validator("columns")
    @classmethod
    def _column_names(cls, columns: dict[str, ColumnMapping]) -> dict[str, ColumnMapping]:
        for name in columns:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"column name {name!r} must match {NAME_PATTERN}")
        return columns


# ---------------------------------------------------------------- databases and queries


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
    name: Name
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
    min_rows: int | None = Field(None, ge=0)
    max_rows: int | None = Field(None, ge=0)


class Query(SqlTable):
    """A query or segment: a SQL result set materialised as a table."""

    checks: QueryChecks = QueryChecks()
    preview_rows: int = Field(10, ge=0, le=100)


# ---------------------------------------------------------------- activations


class OutputFile(Model):
    """How the delivered file is written: Data Destination's file options."""

    type: Literal["csv", "tsv", "psv", "jsonl", "parquet", "xlsx"] = "csv"
    name: str | None = Field(
        None, description="Templated file name, e.g. partner_{{ ds_nodash }}.txt. Required for "
                          "a query; when forwarding a courier's files, blank keeps their names.")
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    header: bool = True
    quoting: Literal["minimal", "all", "nonnumeric", "none"] = Field(
        "minimal", description="Quote fields only where needed, always, non-numbers, or never "
                               "(then delimiters in values are escaped with a backslash).")
    line_suffix: str = Field("", max_length=8, description="Characters appended to every "
                                                          "line, e.g. '|' or '\\r'.")
    line_ending: Literal["lf", "crlf"] = "lf"
    encoding: str = Field("utf-8", description="Any Python codec, e.g. latin-1, cp1252.")
    encoding_errors: Literal["fail", "replace"] = Field(
        "fail", description="A character the encoding cannot hold fails the run (naming the "
                            "row), or becomes '?'.")

    @property
    def effective_delimiter(self) -> str:
        return delimiter_for(self.type, self.delimiter)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r}; use a Python codec name such as "
                             "utf-8, latin-1 or cp1252") from None
        return encoding


class GpgSeal(Model):
    recipients: list[str] = Field(
        min_length=1, description="Public key files (ASCII-armoured or binary), relative to "
                                  "the spec; the file is encrypted to every one of them.")
    armor: bool = Field(False, description="ASCII-armoured output (.asc) instead of binary.")


class Seal(Model):
    """Encryption, then zip, then the md5 of what is sent (the extract tool's order)."""

    gpg: GpgSeal | None = None
    zip: bool = False
    zip_name: str | None = Field(None, description="Templated; default the file name + .zip")


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


# ---------------------------------------------------------------- groups and triggers

Duration = Annotated[str, Field(pattern=r"^\d+(s|m|h|d)$",
                                description="A duration such as 90s, 30m, 2h or 1d.")]


def seconds_of(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


class Schedule(Model):
    cron: str = Field(description="Cron expression, e.g. '0 2 * * *' (02:00 every day).")
    timezone: TimeZone | None = Field(None, description="IANA name; default the workflow's.")
    enabled: bool = Field(True, description="False: the schedule exists but is stopped.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string  # the check Dagster applies

        if not is_valid_cron_string(cron):
            raise ValueError(f"{cron!r} is not a cron expression (five fields: minute hour "
                             "day-of-month month day-of-week, e.g. '0 2 * * *')")
        return cron



Concurrency = Literal["queue", "skip", "cancel_running"]


class WaitForFiles(Model):
    """Amperity's "wait for missing files": look again until they arrive or the deadline."""

    up_to: Duration = Field(description="Deadline after the scheduled time, e.g. 2h.")
    every: Duration = Field("5m", description="How often the source is looked at.")
    then: Literal["notify_and_continue", "notify_and_stop"] = Field(
        "notify_and_stop", description="What happens when the deadline passes.")


class CourierGroup(Model):
    """Couriers loaded together: a job, its schedule and its missing-file policy."""

    couriers: list[Name] = Field(min_length=1)
    run: Literal["load", "load_and_build", "load_build_and_activate"] = Field(
        "load_build_and_activate", description="Load only; load and build the databases and "
                                               "queries downstream; or also run activations.")
    schedule: Schedule | None = None
    missing_files: Literal["notify_and_continue", "notify_and_stop", "wait"] = \
        "notify_and_stop"
    wait: WaitForFiles | None = None
    duration_alert: Duration | None = Field(
        None, description="Alert when a run takes longer (the run goes on).")
    concurrency: Concurrency = Field(
        "queue", description="When triggered while a run of this group is queued or going: "
                             "queue, skip (the tick says why), or cancel_running.")
    enabled: bool = Field(True, description="False: schedule and sensors exist but are stopped.")
    description: str | None = None
    owners: list[Owner] | None = None


class OrchestrationGroup(Model):
    """Activations (and the queries/databases they need) run after a courier group, or on a
    schedule: Amperity's orchestration groups and recurring campaigns."""

    activations: list[Name] = Field(min_length=1)
    queries: list[Name] = Field(default_factory=list)
    databases: list[Name] = Field(default_factory=list)
    after: Name | None = Field(None, description="A courier group: run once after each of its "
                                                 "successful runs.")
    schedule: Schedule | None = None
    duration_alert: Duration | None = None
    concurrency: Concurrency = "queue"
    enabled: bool = True
    description: str | None = None
    owners: list[Owner] | None = None


class FileChange(Model):
    kind: Literal["file_change"]
    connection: Name
    path: str = Field(description="File or glob (in the name) to watch.")


class TableChange(Model):
    kind: Literal["table_change"]
    table: str = Field(description="A warehouse table, schema.table (e.g. domain.customers).")


class SqlChange(Model):
    kind: Literal["sql_change"]
    connection: Name | None = Field(None, description="A `sql` connection; default the "
                                                      "warehouse.")
    query: str


class PythonTrigger(Model):
    kind: Literal["python"]
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="module:function returning a bool or a run config dict.")


class WebhookTrigger(Model):
    kind: Literal["webhook"]
    token: Secret = Field(description="The caller's bearer token, from an environment variable.")
    require_request_id: bool = Field(
        False, description="Every call must carry an X-Request-Id; an id seen in the last 10 "
                           "minutes is refused (409), so a repeated request never launches "
                           "twice. Without it, ids are still honoured when sent.")


TriggerWhen = Annotated[FileChange | TableChange | SqlChange | PythonTrigger | WebhookTrigger,
                        Field(discriminator="kind")]


class Trigger(Model):
    """Dataiku/Serenytics triggers: launch a job when something changes or is called."""

    job: Name = Field(description="A courier group, an orchestration group, or `workflow` for "
                                  "the whole workflow's job.")
    when: TriggerWhen
    every: Duration = Field("1m", description="How often the sensor looks.")
    enabled: bool = True
    description: str | None = None


# ---------------------------------------------------------------- automations


class StepRetry(Model):
    """Retries of a step that failed for a reason a retry can fix (a connection, a timeout);
    a bad query, a bad script or a failed check is never retried."""

    count: int = Field(0, ge=0, le=10)
    delay: Duration = "30s"
    backoff: Literal["constant", "exponential"] = "exponential"


class AutomationStep(Model):
    name: Name | None = Field(None, description="Default: step<N>_<kind>.")
    description: str | None = None
    retry: StepRetry | None = Field(None, description="Overrides the automation's `retry`.")


class FileSource(Model):
    """A query kept as a file on a file connection, fetched at every run."""

    connection: Name = Field(description="A folder, sftp, ftp, smb or s3 connection.")
    path: str = Field(min_length=1, description="The file, relative to the connection's base.")


# Query-string parameter names that carry credentials (token=, api_key=, X-Amz-Signature=...).
_SECRET_PARAM = re.compile(r"token|key|secret|pass|pwd|signature|sig$|auth|credential|session",
                           re.I)


class UrlSource(Model):
    """A query served over HTTP(S), fetched at every run (`sql_url: https://...` for short)."""

    url: str = Field(description="http(s) address of the query; credentials go in `token`, "
                                 "never in the URL.")
    token: Secret | None = Field(None, description="Sent in `header`, from an environment "
                                                   "variable; only over https (or loopback).")
    header: str = Field("Authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")
    scheme: str | None = Field("Bearer", description="Put before the token in the header "
                                                     "(`Bearer <token>`); null: the bare token.")
    ca_file: str | None = Field(None, description="PEM CA bundle for the server's certificate.")
    timeout_seconds: float = Field(30, gt=0, le=600)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        """Never echoes the URL: it may hold a password or a token."""
        if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
            raise ValueError("must be an http:// or https:// address without spaces")
        parts = urlsplit(url)
        fix = ("keep credentials out of the URL (it shows in logs and the spec): send them with "
               "`token: {env: VARIABLE_NAME}` (with `header:` and `scheme:` as the server "
               "expects)")
        if "@" in parts.netloc:
            raise ValueError(f"holds a user name or password before '@'; {fix}")
        for name, _ in parse_qsl(parts.query, keep_blank_values=True):
            if _SECRET_PARAM.search(name):
                raise ValueError(f"its query parameter {name[:40]!r} looks like a credential; "
                                 f"{fix}")
        return url


StatementType = Annotated[str, Field(pattern=r"^[a-z]+( [a-z]+){0,3}$")]


class FetchedQueryStep(AutomationStep):
    """A step whose query may be fetched at run time. The spec keys differ by kind (`sql_url`,
    `query_url`: what users write); code reads `file_source` and `url_source`."""

    FETCH_KEYS: ClassVar[tuple[str, str]]  # the spec keys of the file and the URL source

    @property
    def file_source(self) -> FileSource | None:
        raise NotImplementedError

    @property
    def url_source(self) -> UrlSource | None:
        raise NotImplementedError

    @property
    def fetched(self) -> bool:
        return self.file_source is not None or self.url_source is not None


class SqlStep(FetchedQueryStep):
    """SQL query to storage: statements, or a SELECT that (re)builds `into` (on a `sql`
    connection, its rows are copied into the warehouse)."""

    FETCH_KEYS: ClassVar[tuple[str, str]] = ("sql_source", "sql_url")

    kind: Literal["sql"]
    sql: str | None = None
    sql_file: str | None = Field(None, description="A .sql file, relative to the spec.")
    sql_source: FileSource | None = Field(None, description="A .sql file on a file "
                                                            "connection, fetched at each run.")
    sql_url: UrlSource | None = Field(None, description="A URL serving the SQL, fetched at "
                                                        "each run.")
    allow_statements: list[StatementType] | None = Field(
        None, min_length=1, description="Statement types a fetched query may run (its first "
        "keywords, e.g. select, `create table`); others are removed. Default: select, with, "
        "insert, update, delete, merge, drop table/view, and create of a table, view, schema "
        "(a bare name) or index.")
    connection: Name | None = Field(None, description="A `sql` connection; default the "
                                                      "warehouse.")
    into: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$",
                             description="schema.table in the warehouse, rebuilt from the "
                                         "SELECT's rows (all or nothing), wherever it runs.")

    @property
    def file_source(self) -> FileSource | None:
        return self.sql_source

    @property
    def url_source(self) -> UrlSource | None:
        return self.sql_url


class AlarmStep(FetchedQueryStep):
    """A query's one value against a threshold; when the condition holds, an alarm."""

    FETCH_KEYS: ClassVar[tuple[str, str]] = ("query_source", "query_url")

    kind: Literal["alarm"]
    query: str | None = None
    query_source: FileSource | None = Field(None, description="As a sql step's `sql_source`.")
    query_url: UrlSource | None = Field(None, description="As a sql step's `sql_url`.")
    allow_statements: list[StatementType] | None = Field(None, min_length=1)
    connection: Name | None = None
    condition: Literal[">", ">=", "<", "<=", "==", "!="]
    threshold: float
    stop: bool = Field(False, description="Also fail the step (the chain stops) when the "
                                          "alarm is raised.")

    @property
    def file_source(self) -> FileSource | None:
        return self.query_source

    @property
    def url_source(self) -> UrlSource | None:
        return self.query_url


class PythonStep(AutomationStep):
    """A Python processing script, run as its own process through Dagster Pipes."""

    kind: Literal["python"]
    script: str = Field(description="A .py file or a folder with main.py, relative to the spec.")
    args: list[str] = Field(default_factory=list, description="Templated; argv[1:].")
    env: dict[str, Setting] = Field(default_factory=dict)
    connections: list[Name] = Field(default_factory=list, description="Connections whose "
                                    "details the script gets as STAGECOACH_CONN_<NAME>_<FIELD> "
                                    "variables (secrets read from their env variables).")
    requirements: list[str] = Field(default_factory=list)
    timeout: Duration | None = None


class SshStep(AutomationStep):
    """A command or script on a remote host, through an `sftp` connection's host and
    credentials (host key checked)."""

    kind: Literal["ssh"]
    connection: Name
    command: str | None = None
    script_file: str | None = None
    env: dict[str, Setting] = Field(default_factory=dict)
    timeout: Duration | None = None


TableName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")]
ColumnName = Annotated[str, Field(pattern=NAME_PATTERN)]


class PivotStep(AutomationStep):
    """A warehouse table pivoted into another: one row per `index`, one column per distinct
    value of `columns`, holding `aggregate(values)`."""

    kind: Literal["pivot"]
    from_: Annotated[TableName, Field(alias="from")]
    into: TableName
    index: list[ColumnName] = Field(min_length=1)
    columns: ColumnName
    values: ColumnName
    aggregate: Literal["sum", "count", "min", "max", "avg"] = "sum"
    max_columns: int = Field(200, ge=1, le=1000)


class ConcatStep(AutomationStep):
    """Warehouse tables stacked into one, columns aligned by name (missing ones are NULL)."""

    kind: Literal["concat"]
    sources: list[TableName] = Field(min_length=2)
    into: TableName
    source_column: ColumnName | None = Field(None, description="A column naming each row's "
                                                               "source table.")


SOURCE_NAME = r"[A-Za-z_][A-Za-z0-9_$]*"
SourceTable = Annotated[str, Field(pattern=rf"^{SOURCE_NAME}(\.{SOURCE_NAME})?$")]


class SyncStep(AutomationStep):
    """Whole tables of a `sql` connection copied into warehouse tables (Serenytics' "sync
    datasource to storage"); each table all or nothing."""

    kind: Literal["sync"]
    connection: Name
    tables: dict[SourceTable, TableName] = Field(
        min_length=1, description="Source table (`table` or `schema.table`, as the source "
                                  "spells it) → warehouse schema.table.")



class EtlStep(AutomationStep):
    """A warehouse table into another through one SELECT: computed columns, a filter, then
    columns or a group by with aggregates. Expressions are SQL text, the spec author's own."""

    kind: Literal["etl"]
    from_: Annotated[TableName, Field(alias="from")]
    into: TableName
    computed: dict[ColumnName, str] = Field(default_factory=dict, description="name: SQL "
                                            "expression over the source's columns.")
    filter: str | None = Field(None, description="SQL condition (over source and computed "
                                                 "columns), templated: values are bound.")
    columns: list[ColumnName] = Field(default_factory=list, description="Kept columns; "
                                      "default all (or the group_by columns).")
    group_by: list[ColumnName] = Field(default_factory=list)
    aggregates: dict[ColumnName, str] = Field(default_factory=dict, description="name: SQL "
                                              "aggregate, e.g. sum(amount).")


class ReportTable(Model):
    sql: str = Field(description="A SELECT, templated (values are bound).")
    title: str | None = None
    max_rows: int = Field(50, ge=1, le=5000, description="Rows past it are cut, with a note.")


class ReportChart(Model):
    type: Literal["bar", "line"]
    sql: str = Field(description="A SELECT whose `x` and `y` columns are drawn.")
    x: ColumnName | None = Field(None, description="Label column; default the first.")
    y: ColumnName | None = Field(None, description="Numeric column; default the second.")
    title: str | None = None
    max_points: int = Field(100, ge=2, le=1000)


class ReportStep(AutomationStep):
    """Query results as a PDF: tables and a chart; the file is handed to the next step."""

    kind: Literal["report"]
    title: str
    file_name: str | None = Field(None, description="Templated; default <step>_<ds>.pdf.")
    connection: Name | None = Field(None, description="A `sql` connection; default the "
                                                      "warehouse.")
    tables: list[ReportTable] = Field(default_factory=list, max_length=20)
    chart: ReportChart | None = None


Step = Annotated[SqlStep | AlarmStep | PythonStep | SshStep | PivotStep | ConcatStep | EtlStep
                 | ReportStep | SyncStep, Field(discriminator="kind")]


class Automation(Model):
    """Serenytics/Dataiku automations: steps run one after the other; the first failure stops
    the chain and the steps after it are reported as not run. A chain automation runs other
    automations instead (`chain:`), in order or side by side (`mode:`)."""

    steps: list[Step] = Field(default_factory=list)
    chain: list[Name] = Field(default_factory=list, description="Child automations, run in "
                                                                "this order (run rank).")
    mode: Literal["series", "parallel"] = Field("series", description="`series`: the first "
                                                "failed child stops the chain; `parallel`: all "
                                                "run, the chain fails if one does.")
    run_as: Name | None = Field(None, description="A `profiles:` entry whose connections the "
                                                  "scheduled runs use.")
    schedule: Schedule | None = None
    mutex: Name | None = Field(None, description="Automations sharing a mutex never run at "
                                                 "the same time: the later one waits.")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Defaults a launch can override (run config).")
    retry: StepRetry = StepRetry()
    enabled: bool = True
    description: str | None = None
    owners: list[Owner] | None = None

    def step_names(self) -> list[str]:
        return [step.name or f"step{i + 1}_{step.kind}" for i, step in enumerate(self.steps)]


class Profile(Model):
    """Run-as credentials (Serenytics' run-as-user): connections swapped for others, holding
    another account's credentials, in the runs of automations that name the profile."""

    connections: dict[Name, Name] = Field(min_length=1, description="Connection → the one "
                                                                    "used in its place.")
    description: str | None = None


# ---------------------------------------------------------------- alerts

AlertEvent = Literal["start", "success", "failure", "runtime_exceeded", "missing_files",
                     "alarm", "sensor_error"]
ALERT_EVENTS: tuple[str, ...] = AlertEvent.__args__  # type: ignore[attr-defined]
PROBLEM_EVENTS = ("failure", "runtime_exceeded", "missing_files", "alarm", "sensor_error")


class AlertTemplate(Model):
    """Overrides of one event's message (Jinja; the variables are listed in the README)."""

    title: str | None = None
    text: str | None = None


class AlertReporter(Model):
    """What every reporter shares: which events, for which jobs, with which templates."""

    send_on: list[AlertEvent] | Literal["always", "problems"] = Field(
        "problems", description="Events to report: a list, `always` (all), or `problems` "
                                "(failure, runtime_exceeded, missing_files, alarm, "
                                "sensor_error).")
    jobs: list[Name] | None = Field(
        None, description="Courier or orchestration groups (or `workflow`, the whole "
                          "workflow's job) whose runs this reporter follows; default: all.")
    templates: dict[AlertEvent, AlertTemplate] = Field(default_factory=dict)
    description: str | None = None

    @field_validator("send_on", mode="before")
    @classmethod
    def _known_events(cls, value: object) -> object:
        known = f"the events are {', '.join(ALERT_EVENTS)}; or write `always` or `problems`"
        if isinstance(value, str) and value not in ("always", "problems"):
            raise ValueError(f"unknown value {value!r}: give a list of events ({known})")
        for event in value if isinstance(value, list) else []:
            if event not in ALERT_EVENTS:
                raise ValueError(f"unknown event {event!r} ({known})")
        return value

    @property
    def events(self) -> tuple[str, ...]:
        if self.send_on == "always":
            return ALERT_EVENTS
        return PROBLEM_EVENTS if self.send_on == "problems" else tuple(self.send_on)


class HttpReporter(AlertReporter):
    """Reporters over HTTP: retried on connection errors, 429 and 5xx with backoff."""

    # Defaults keep a reporter that is down under ~20 s: a sensor evaluation has about 60.
    retries: int = Field(2, ge=0, le=10, description="Further attempts after the first.")
    backoff_seconds: float = Field(1.0, ge=0, le=60, description="Wait before the first retry, "
                                                                 "doubled each time.")
    timeout_seconds: float = Field(5.0, gt=0, le=300, description="Per attempt.")
    ca_file: str | None = Field(None, description="PEM CA bundle that signed the server's "
                                                  "certificate; default the system's store.")
    verify_tls: bool = Field(True, description="false: encrypt without checking the server's "
                                               "certificate (explicit opt-out).")


class SlackAlert(HttpReporter):
    kind: Literal["slack"]
    channel: str = Field(description="#channel, channel name or ID.")
    token: Secret = Field(description="A bot token with chat:write.")
    base_url: str = "https://slack.com/api/"


class MailAlert(AlertReporter):
    kind: Literal["mail"]
    connection: Name = Field(description="An `smtp` connection.")
    to: list[str] = Field(default_factory=list)
    sms_to: list[str] = Field(default_factory=list, description="Email-to-SMS gateway "
                                                                 "addresses: short plain text.")
    html: bool = True


class TwilioAlert(HttpReporter):
    kind: Literal["twilio"]
    account_sid: Setting
    auth_token: Secret
    from_: Annotated[str, Field(alias="from")]
    to: list[str] = Field(min_length=1)
    base_url: str = "https://api.twilio.com"


class TeamsAlert(HttpReporter):
    kind: Literal["teams"]
    webhook_url: Secret = Field(description="The incoming webhook's URL (it holds a token).")


class WebhookAlert(HttpReporter):
    kind: Literal["webhook"]
    url: Secret = Field(description="Where to POST the alert as JSON (URLs often hold tokens).")
    secret: Secret | None = Field(None, description="HMAC-SHA256 key for a signature header.")
    header: str = "X-Stagecoach-Signature"


class ShellAlert(AlertReporter):
    kind: Literal["shell"]
    command: list[str] = Field(min_length=1, description="Program, then arguments (no shell).")
    timeout_seconds: float = Field(30, gt=0)
    env: dict[str, Setting] = Field(default_factory=dict)


class DatasetAlert(AlertReporter):
    """Send to dataset: a row per alert and per finished run in stagecoach.run_history."""

    kind: Literal["dataset"]
    send_on: list[AlertEvent] | Literal["always", "problems"] = "always"


Alert = Annotated[SlackAlert | MailAlert | TwilioAlert | TeamsAlert | WebhookAlert | ShellAlert
                  | DatasetAlert, Field(discriminator="kind")]


# ---------------------------------------------------------------- workflow


class WorkflowInfo(Model):
    name: Name
    description: str | None = None
    owners: list[Owner] = Field(default_factory=list)
    timezone: TimeZone = "UTC"
    start_date: date | None = Field(
        None, description="First daily partition of dated couriers (required if any)."
    )
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    archive: str | None = Field(
        None, description="Connection (folder or s3) keeping a copy of every delivered file; "
                          "default a folder in Stagecoach's data directory.")



class Workflow(Model):
    """One YAML file: a tenant's whole pipeline."""

    workflow: WorkflowInfo
    connections: dict[Name, Connection] = Field(default_factory=dict)
    couriers: dict[Name, Courier] = Field(default_factory=dict)
    domain_tables: dict[Name, DomainTable] = Field(default_factory=dict)
    databases: dict[Name, Database] = Field(default_factory=dict)
    queries: dict[Name, Query] = Field(default_factory=dict)
    activations: dict[Name, Activation] = Field(default_factory=dict)
    courier_groups: dict[Name, CourierGroup] = Field(default_factory=dict)
    orchestration_groups: dict[Name, OrchestrationGroup] = Field(default_factory=dict)
    triggers: dict[Name, Trigger] = Field(default_factory=dict)
    profiles: dict[Name, Profile] = Field(default_factory=dict)
    automations: dict[Name, Automation] = Field(default_factory=dict)
    alerts: dict[Name, Alert] = Field(default_factory=dict)
