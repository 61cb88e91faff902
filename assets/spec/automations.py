"""Automations: steps run one after the other (SQL, Python, SSH, pivots, alarms,
reports, deliveries), chains and run-as profiles."""

import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from assets.spec.activations import MailDelivery, OutputFile, Seal
from assets.spec.common import NAME_PATTERN, Model, Name, Owner, Secret, Setting
from assets.spec.groups import Duration, Schedule


class StepRetry(Model):
    """Retries of a step that failed for a reason a retry can fix (a connection, a timeout);
    a bad query, a bad script or a failed check is never retried."""

    count: int = Field(default=0, ge=0, le=10)
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
    requirements: list[str] = Field(default_factory=list, description="Packages from the "
                                    "index, `name[extras] <version spec>`; wheels only.")
    timeout: Duration | None = None

    @field_validator("requirements")
    @classmethod
    def _index_packages_only(cls, requirements: list[str]) -> list[str]:
        """A URL, path or pip option would install (and run) code from past the index."""
        from resources.processes.python_script import requirement_problem

        for requirement in requirements:
            if problem := requirement_problem(requirement):
                raise ValueError(f"requirement {requirement!r} is not accepted: {problem}")
        return requirements


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


class DeliverStep(AutomationStep):
    """The chain's current files sent as an activation sends its files: the same destinations,
    sealing, file name, empty-file and overwrite rules, archive and delivery ledger (so history,
    download and the re-send job work for them). Its ledger rows name `<automation>__<step>`."""

    kind: Literal["deliver"]
    to: str | list[str] = Field(description="Destination connection(s): folder, sftp, ftp, "
                                            "smb, s3 or smtp.")
    path: str = Field("", description="Folder under the destination, templated.")
    file: OutputFile = Field(OutputFile(), description="Only `name` applies (templated, with "
                                                       "{{ source_name }}); blank keeps names.")
    seal: Seal = Seal()
    empty: Literal["skip", "send", "fail"] = Field(
        "skip", description="An empty (0-byte) file: send nothing and say so, send it, or fail.")
    overwrite: bool = True
    mail: MailDelivery | None = None

    @property
    def destinations(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)


Step = Annotated[SqlStep | AlarmStep | PythonStep | SshStep | PivotStep | ConcatStep | EtlStep
                 | ReportStep | SyncStep | DeliverStep, Field(discriminator="kind")]


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
