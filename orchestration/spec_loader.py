"""YAML workflow files → typed `Workflow` models, with every error at once.

Each error names the file, the line and the path inside the spec, and says what to do, e.g.
`workflows/acme.yaml:41 couriers.orders.from: unknown connection 'vendr_sftp' (known: landing)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.resolver import Resolver

from assets import spec
from assets.sealing import MAIL_SAMPLE, public_key_problem
from assets.sql_refs import SqlCatalog
from assets.templating import check_template
from orchestration import settings
from orchestration.automation_checks import AutomationChecks
from resources.alert_templates import check_overrides

# Labels pydantic puts in an error's location for the member of a union that was tried.
CONNECTION_KINDS = ("folder", "sftp", "ftp", "smb", "s3", "smtp", "sql")
TRIGGER_KINDS = ("file_change", "table_change", "sql_change", "python", "webhook")
ALERT_KINDS = ("slack", "mail", "twilio", "teams", "webhook", "shell", "dataset")
STEP_KINDS = ("sql", "alarm", "python", "ssh", "pivot", "concat", "etl", "report", "sync")
UNION_MEMBERS = {*CONNECTION_KINDS, *TRIGGER_KINDS, *ALERT_KINDS, *STEP_KINDS, "str", "EnvRef"}
FILE_KINDS = spec.FILE_KINDS
SECRET_FIELDS = {"password", "private_key_passphrase", "access_key_id", "secret_access_key", "url",
                 "token", "auth_token", "webhook_url", "secret"}
SECTIONS: dict[str, Any] = {
    "connections": spec.Connection,
    "couriers": spec.Courier,
    "domain_tables": spec.DomainTable,
    "databases": spec.Database,
    "queries": spec.Query,
    "activations": spec.Activation,
    "courier_groups": spec.CourierGroup,
    "orchestration_groups": spec.OrchestrationGroup,
    "triggers": spec.Trigger,
    "profiles": spec.Profile,
    "automations": spec.Automation,
    "alerts": spec.Alert,
}
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecError:
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


@dataclass(frozen=True)
class LoadedWorkflow:
    """A validated workflow, the file it came from and the line of every spec path."""

    spec: spec.Workflow
    path: Path
    lines: Mapping[Path_, int] = field(default_factory=dict)


def spec_files(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    return sorted([*target.glob("*.yaml"), *target.glob("*.yml")])


def load_workflows(target: Path | None = None) -> list[LoadedWorkflow]:
    """Load every spec under a folder (or one file); raise `SpecInvalid` with all errors."""
    target = target or settings.workflows_dir()
    if not target.exists():
        raise SpecInvalid([SpecError(str(target), 0, "", f"no such file or folder; set "
                                     f"{settings.WORKFLOWS_DIR_ENV} or pass a path")])
    files = spec_files(target)
    if not files:
        raise SpecInvalid([SpecError(str(target), 0, "", "no workflow spec (*.yaml) here; "
                                     "add one or point at another folder")])
    loaded, errors = [], []
    for file in files:
        try:
            loaded.append(load_workflow(file))
        except SpecInvalid as invalid:
            errors.extend(invalid.errors)
    errors.extend(_cross_workflow_errors(loaded))
    if errors:
        raise SpecInvalid(errors)
    return loaded


def load_workflow(file: Path) -> LoadedWorkflow:
    text = file.read_text(encoding="utf-8")
    return _Validator(_display(file), file.parent).run(text, file)


def load_workflow_text(text: str, name: str = "<inline>.yaml", base: Path | None = None
                       ) -> spec.Workflow:
    """Validate spec text (tests, tools); relative paths resolve against `base`."""
    return _Validator(name, base or Path.cwd()).run(text, None).spec


def _display(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(file)


MAX_YAML_NODES = 200_000  # the demo has ~3,000; a spec of 15,000 lines ~50,000
MAX_YAML_DEPTH = 10_000  # collections inside collections; real specs nest fewer than 20


class _YamlTooComplex(Exception):
    """The YAML cannot become a spec: a cyclic alias, aliases expanding too far, or nesting
    deeper than the parser's stack (the line is where it was noticed)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


class _Lines:
    """Line numbers of every key and value in a YAML document, by path."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int]] = []

    def walk(self, root: yaml.Node) -> None:
        """Record every path's line, without recursion: a YAML alias can make the tree cyclic
        (`a: &x [*x]`) or, nested, expand it exponentially; both are refused (_YamlTooComplex)
        instead of looping or exhausting the stack."""
        stack: list[tuple[yaml.Node, Path_, frozenset[int]]] = [(root, (), frozenset())]
        visited = 0
        while stack:
            node, path, ancestors = stack.pop()
            visited += 1
            if visited > MAX_YAML_NODES:
                raise _YamlTooComplex(node.start_mark.line + 1, f"more than {MAX_YAML_NODES:,} "
                                      "values once aliases (*name) are expanded; write the "
                                      "spec out or split it")
            if id(node) in ancestors:
                raise _YamlTooComplex(node.start_mark.line + 1, "an alias (*name) refers to a "
                                      "value that contains it, so the spec never ends")
            self.lines.setdefault(path, node.start_mark.line + 1)
            inside = ancestors | {id(node)}
            if isinstance(node, yaml.MappingNode):
                seen: set[str] = set()
                for key_node, value_node in node.value:
                    key = str(key_node.value)
                    child = (*path, key)
                    if key in seen:
                        self.duplicates.append((child, key_node.start_mark.line + 1))
                    seen.add(key)
                    self.lines[child] = key_node.start_mark.line + 1
                    stack.append((value_node, child, inside))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    stack.append((item, (*path, index), inside))

    def line(self, path: Iterable[str | int]) -> int:
        """The line of the deepest part of `path` that exists in the file."""
        found: Path_ = ()
        for part in path:
            candidate = (*found, part)
            if candidate in self.lines:
                found = candidate
        return self.lines.get(found, 1)


try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml: the pure-Python parser does it all
    YAML_LOADER: type = yaml.SafeLoader
else:
    class _LibyamlSafeLoader(CParser, SafeConstructor, Resolver):
        """libyaml's scanner and parser (C: most of the time on a large spec) with a composer
        that builds the same nodes as PyYAML's, in a loop. libyaml's own composer recurses in C
        (a spec nested ~40,000 levels deep crashes the process) and PyYAML's in Python (a few
        hundred levels: RecursionError); this one has no depth limit but memory."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def get_single_node(self) -> yaml.Node | None:
            self.get_event()  # stream start
            document = None
            if not self.check_event(StreamEndEvent):
                self.get_event()  # document start
                document = self._compose_nodes()
                self.get_event()  # document end
            if not self.check_event(StreamEndEvent):
                event = self.get_event()
                raise ComposerError("expected a single document in the stream",
                                    document.start_mark if document else None,
                                    "but found another document", event.start_mark)
            self.get_event()  # stream end
            return document

        def _compose_nodes(self) -> yaml.Node:
            """PyYAML's Composer.compose_node without recursion (no path resolvers: the safe
            loader has none). An anchor names its collection before the collection's items
            are read, as in PyYAML, so `&a [*a]` is the cycle _Lines.walk refuses."""
            anchors: dict[str, yaml.Node] = {}
            open_nodes: list[tuple[yaml.Node, list[yaml.Node]]] = []  # (node, key awaiting value)
            while True:
                if len(open_nodes) > MAX_YAML_DEPTH:
                    raise _YamlTooComplex(open_nodes[-1][0].start_mark.line + 1, f"values "
                                          f"nested more than {MAX_YAML_DEPTH:,} levels deep; "
                                          "flatten them")
                if open_nodes and self.check_event(SequenceEndEvent, MappingEndEvent):
                    done, _ = open_nodes.pop()
                    done.end_mark = self.get_event().end_mark
                else:
                    event = self.get_event()
                    if isinstance(event, AliasEvent):
                        if event.anchor not in anchors:
                            raise ComposerError(None, None, f"found undefined alias "
                                                f"{event.anchor!r}", event.start_mark)
                        done = anchors[event.anchor]
                    else:
                        if event.anchor is not None and event.anchor in anchors:
                            raise ComposerError(f"found duplicate anchor {event.anchor!r}; "
                                                "first occurrence",
                                                anchors[event.anchor].start_mark,
                                                "second occurrence", event.start_mark)
                        kind = (yaml.ScalarNode if isinstance(event, ScalarEvent) else
                                yaml.SequenceNode if isinstance(event, SequenceStartEvent)
                                else yaml.MappingNode)
                        tag = event.tag
                        if tag is None or tag == "!":
                            tag = self.resolve(kind, getattr(event, "value", None),
                                               event.implicit)
                        if kind is yaml.ScalarNode:
                            done = yaml.ScalarNode(tag, event.value, event.start_mark,
                                                   event.end_mark, style=event.style)
                        else:
                            done = kind(tag, [], event.start_mark, None,
                                        flow_style=event.flow_style)
                        if event.anchor is not None:
                            anchors[event.anchor] = done
                        if kind is not yaml.ScalarNode:
                            open_nodes.append((done, []))
                            continue
                if not open_nodes:
                    return done
                parent, key = open_nodes[-1]
                if isinstance(parent, yaml.SequenceNode):
                    parent.value.append(done)
                elif key:
                    parent.value.append((key.pop(), done))
                else:
                    key.append(done)

    YAML_LOADER = _LibyamlSafeLoader


@cache  # one per spec section: building one costs up to 5 ms (unions)
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


def _compose_and_construct(text: str, loader_class: type) -> tuple[yaml.Node | None, Any]:
    """(node tree, data) of a YAML document in one pass: the nodes keep every line number and
    the data is built from them, not parsed a second time."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


class _Validator(AutomationChecks):
    def __init__(self, file: str, base: Path):
        self.file, self.base = file, base
        self.errors: list[SpecError] = []
        self.lines = _Lines()

    def error(self, path: Iterable[str | int], message: str) -> None:
        path = tuple(path)
        self.errors.append(
            SpecError(self.file, self.lines.line(path), ".".join(map(str, path)), message)
        )

    def run(self, text: str, file: Path | None) -> LoadedWorkflow:
        try:
            raw = self._parse_yaml(text)
        except _YamlTooComplex as bad:
            self.errors.append(SpecError(self.file, bad.line, "", f"not usable YAML: "
                                         f"{bad.message}"))
            raw = None
        except RecursionError:
            self.errors.append(SpecError(self.file, 1, "", "not usable YAML: values nested too "
                                         "deeply (hundreds of levels of [ or {); flatten them"))
            raw = None
        workflow = self._build(raw) if raw is not None else None
        if self.errors or workflow is None:
            unique = dict.fromkeys(self.errors)  # union members can repeat one problem
            raise SpecInvalid(sorted(unique, key=lambda e: (e.line, e.path)))
        return LoadedWorkflow(workflow, file or Path(self.file), self.lines.lines)

    # -- YAML
    def _parse_yaml(self, text: str) -> dict | None:
        try:
            node, data = _compose_and_construct(text, YAML_LOADER)
        except yaml.YAMLError:
            pass  # said again below by the pure-Python parser, whose messages are clearer
        else:
            return self._mapping(node, data)
        try:
            node, data = _compose_and_construct(text, yaml.SafeLoader)
        except yaml.MarkedYAMLError as bad:
            mark = bad.problem_mark or bad.context_mark
            line = mark.line + 1 if mark else 1
            self.errors.append(SpecError(self.file, line, "", f"not valid YAML: {bad.problem}"))
            return None
        except yaml.reader.ReaderError as bad:  # a control character: it carries no mark
            line = text[:bad.position].count("\n") + 1
            shown = f"#x{bad.character:04x}" if isinstance(bad.character, int) else "a character"
            self.errors.append(SpecError(self.file, line, "", f"not valid YAML: {shown} is not "
                                         "allowed (a control character?); remove it"))
            return None
        return self._mapping(node, data)

    def _mapping(self, node: yaml.Node | None, data: Any) -> dict | None:
        """The parsed document if it is a mapping; its lines and duplicate keys recorded."""
        if not isinstance(data, dict) or node is None:
            self.errors.append(SpecError(self.file, 1, "", "a workflow spec is a mapping with "
                                         "a `workflow:` section and named sections"))
            return None
        self.lines.walk(node)
        for path, line in self.lines.duplicates:
            self.errors.append(SpecError(self.file, line, ".".join(map(str, path)),
                                         "duplicate key: the later value would silently win"))
        return data

    # -- structure
    def _validate(self, model: Any, value: Any, path: Path_) -> Any:
        try:
            return _adapter(model).validate_python(value)
        except ValidationError as invalid:
            for problem in invalid.errors():
                self._pydantic_error(path, problem)
            return None

    def _pydantic_error(self, path: Path_, problem: Mapping[str, Any]) -> None:
        members = [p for p in problem["loc"] if p in UNION_MEMBERS]
        loc = [p for p in problem["loc"] if p not in UNION_MEMBERS]
        full = (*path, *loc)
        kind, field = problem["type"], str(loc[-1]) if loc else ""
        if "str" in members or ("EnvRef" in members and field not in SECRET_FIELDS):
            message = "must be text or {env: VARIABLE_NAME}"
        elif kind == "extra_forbidden":
            message = f"unknown key '{field}'; remove it or check its spelling"
        elif field in SECRET_FIELDS and kind in ("model_type", "model_attributes_type"):
            message = ("is a secret: write {env: VARIABLE_NAME} and set that variable in the "
                       "environment; a literal value is not accepted")
        elif kind == "union_tag_invalid":
            message = (f"unknown kind {problem['ctx'].get('tag')!r} "
                       f"(known: {problem['ctx'].get('expected_tags')})")
        elif kind == "union_tag_not_found":
            kinds = (TRIGGER_KINDS if "when" in full else ALERT_KINDS if full[0] == "alerts"
                     else STEP_KINDS if "steps" in full else CONNECTION_KINDS)
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
        self.error(full, message)

    def _build(self, raw: dict) -> spec.Workflow | None:
        for key in raw:
            if key != "workflow" and key not in SECTIONS:
                self.error((key,), f"unknown section '{key}' (known: workflow, "
                                   f"{', '.join(SECTIONS)})")
        if "workflow" not in raw:
            self.error((), "missing `workflow:` section with at least `name:`")
        info = (self._validate(spec.WorkflowInfo, raw["workflow"], ("workflow",))
                if "workflow" in raw else None)
        sections: dict[str, dict[str, Any]] = {}
        self.known: dict[str, set[str]] = {}
        for section, model in SECTIONS.items():
            items = raw.get(section) or {}
            if not isinstance(items, dict):
                self.error((section,), "must be a mapping of name → settings")
                items = {}
            self.known[section] = set(map(str, items))
            parsed = {}
            for name, value in items.items():
                if not re.match(spec.NAME_PATTERN, str(name)):
                    self.error((section, name), "names must be lower_snake_case (a letter, then "
                                                "letters, digits or `_`, at most 63)")
                    continue
                if model is dict:
                    self.error((section, name), f"`{section}` is not available yet in this "
                                                "version of Stagecoach; remove the entry")
                    continue
                if isinstance(value, dict) and True in value and section == "alerts":
                    self.error((section, name, "on"), "YAML reads the key `on` as true; write "
                                                      "`send_on:` for the events to report")
                    value = {k: v for k, v in value.items() if k is not True}
                item = self._validate(model, value, (section, name))
                if item is not None:
                    parsed[name] = self._resolve(section, name, item)
            sections[section] = parsed
        raw_info = raw.get("workflow")
        self._check_references(sections, info, raw_info.get("params") if isinstance(
            raw_info, dict) else None)
        if info is None or self.errors:
            return None
        return spec.Workflow(workflow=info, **sections)

    # -- resolution of files relative to the spec
    def _resolve(self, section: str, name: str, item: BaseModel) -> BaseModel:
        if isinstance(item, spec.FolderConnection) and not Path(item.path).is_absolute():
            return item.model_copy(update={"path": str((self.base / item.path).resolve())})
        if section == "databases":
            tables = {t: self._resolve_sql((section, name, "tables", t), table)
                      for t, table in item.tables.items()}
            return item.model_copy(update={"tables": tables})
        if section == "queries":
            return self._resolve_sql((section, name), item)
        if section == "automations":
            steps = [self._resolve_step((section, name, "steps", i), step)
                     for i, step in enumerate(item.steps)]
            return item.model_copy(update={"steps": steps})
        if section == "activations" and item.seal.gpg is not None:
            keys = [self._resolve_key((section, name, "seal", "gpg", "recipients", i), key)
                    for i, key in enumerate(item.seal.gpg.recipients)]
            gpg = item.seal.gpg.model_copy(update={"recipients": keys})
            return item.model_copy(update={"seal": item.seal.model_copy(update={"gpg": gpg})})
        return item

    def _resolve_step(self, path: Path_, step: Any) -> Any:
        """Files a step names, relative to the spec: read (SQL, a remote script) or made
        absolute (a Python script or its folder)."""
        if isinstance(step, spec.SqlStep):
            given = [k for k in ("sql", "sql_file", "sql_source", "sql_url") if getattr(step, k)]
            if len(given) != 1:
                self.error(path, "give exactly one of `sql:`, `sql_file:`, `sql_source:` or "
                                 "`sql_url:`")
                return step
            return step if step.sql_source or step.sql_url else self._resolve_sql(path, step)
        if isinstance(step, spec.AlarmStep):
            given = [k for k in ("query", "query_source", "query_url") if getattr(step, k)]
            if len(given) != 1:
                self.error(path, "give exactly one of `query:`, `query_source:` or `query_url:`")
        if isinstance(step, spec.SshStep):
            if bool(step.command) == bool(step.script_file):
                self.error(path, "give exactly one of `command:` or `script_file:`")
            elif step.script_file:
                file = self.base / step.script_file
                if not file.is_file():
                    self.error((*path, "script_file"), f"no such file {str(file)!r} (paths are "
                                                       "relative to the spec file)")
                    return step
                return step.model_copy(update={"command": file.read_text(encoding="utf-8")})
        if isinstance(step, spec.PythonStep):
            script = (self.base / step.script).resolve()
            entry = script / "main.py" if script.is_dir() else script
            if not entry.is_file():
                self.error((*path, "script"), f"no such script {str(entry)!r} (a .py file, or a "
                                              "folder with main.py, relative to the spec file)")
                return step
            return step.model_copy(update={"script": str(script)})
        return step

    def _resolve_key(self, path: Path_, key: str) -> str:
        """A recipient's public key file, checked now so a bad key never fails a night run."""
        file = self.base / key
        if not file.is_file():
            self.error(path, f"no such key file {str(file)!r} (paths are relative to the spec "
                             "file)")
            return key
        problem = public_key_problem(file)
        if problem:
            self.error(path, problem)
        return str(file.resolve())

    def _resolve_sql(self, path: Path_, table: spec.SqlTable) -> spec.SqlTable:
        if bool(table.sql) == bool(table.sql_file):
            self.error(path, "give exactly one of `sql:` or `sql_file:`")
            return table
        if table.sql_file:
            file = self.base / table.sql_file
            if not file.is_file():
                self.error((*path, "sql_file"), f"no such file {str(file)!r} (paths are "
                                                "relative to the spec file)")
                return table
            return table.model_copy(update={"sql": file.read_text(encoding="utf-8")})
        return table

    # -- semantics
    def _known(self, section: str, name: str, path: Path_, what: str) -> bool:
        if name in self.known[section]:
            return True
        known = ", ".join(sorted(self.known[section])) or "none defined"
        self.error(path, f"unknown {what} {name!r} (known: {known})")
        return False

    def _check_references(self, s: dict[str, dict[str, Any]], info: Any,
                          raw_params: Any) -> None:
        # With a broken `workflow:` section, still check templates against its raw params.
        params = info.params if info is not None else (
            raw_params if isinstance(raw_params, dict) else {})
        connections = s["connections"]
        self.couriers = s["couriers"]
        for name, courier in s["couriers"].items():
            path = ("couriers", name)
            if self._known("connections", courier.from_, (*path, "from"), "connection"):
                self._check_courier(path, courier, connections.get(courier.from_))
            self._template(courier.path, (*path, "path"), params)
            self._template(courier.query, (*path, "query"), params, sql=True)
            if courier.dated and info is not None and info.start_date is None:
                self.error(path, "its path is dated, so it is daily-partitioned: set "
                                 "`workflow.start_date` (the first day to load)")
        for name, table in s["domain_tables"].items():
            path = ("domain_tables", name)
            self._known("couriers", table.from_, (*path, "from"), "courier")
            self._check_quality(path, table.quality, set(table.columns) | {"_source_file",
                                                                           "_partition"})
            for key in table.primary_key or []:
                if key not in table.columns:
                    self.error((*path, "primary_key"), f"{key!r} is not one of the columns "
                                                       f"({', '.join(table.columns)})")
        catalog = SqlCatalog.of(
            domain=self.known["domain_tables"],
            databases={db: set(d.tables) for db, d in s["databases"].items()},
            queries=self.known["queries"],
        )
        graph: dict[str, set[str]] = {}
        for db, database in s["databases"].items():
            if db in ("domain", "query"):
                self.error(("databases", db), f"'{db}' is reserved for Stagecoach's own "
                                              "schema; choose another database name")
            for t, table in database.tables.items():
                path = ("databases", db, "tables", t)
                graph[f"{db}.{t}"] = self._sql_deps(path, table, catalog, params)
                self._check_quality(path, table.quality, None)
        for name, query in s["queries"].items():
            graph[f"query.{name}"] = self._sql_deps(("queries", name), query, catalog, params)
            self._check_quality(("queries", name), query.quality, None)
        self._check_cycles(graph)
        for name, activation in s["activations"].items():
            self._check_activation(("activations", name), activation, connections, params)
        self._check_groups(s, connections, catalog, params)
        if info is not None and info.archive is not None and self._known(
                "connections", info.archive, ("workflow", "archive"), "connection"):
            kind = getattr(connections.get(info.archive), "kind", None)
            if kind not in ("folder", "s3", None):
                self.error(("workflow", "archive"), f"the archive must be a folder or s3 "
                                                    f"connection, not {kind}")

    def _check_activation(self, path: Path_, activation: spec.Activation,
                          connections: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        if bool(activation.query) == bool(activation.courier):
            self.error(path, "give exactly one of `query:` (deliver its result as a file) or "
                             "`courier:` (forward its files)")
        if activation.query:
            self._known("queries", activation.query, (*path, "query"), "query")
            if not activation.file.name:
                self.error((*path, "file", "name"), "is required when delivering a query "
                                                    "(e.g. partner_{{ ds_nodash }}.csv)")
        if activation.courier and self._known("couriers", activation.courier,
                                              (*path, "courier"), "courier") and \
                not activation.query:
            self._check_forwarding(path, activation)
        to_path = (*path, "to")
        mails, all_known = False, True
        for i, target_name in enumerate(activation.destinations):
            where = to_path if isinstance(activation.to, str) else (*to_path, i)
            if not self._known("connections", target_name, where, "connection"):
                all_known = False
                continue
            kind = getattr(connections.get(target_name), "kind", None)
            if kind == "sql":
                self.error(where, "a `sql` connection cannot receive files; use a folder, sftp, "
                                  "ftp, smb, s3 or smtp connection")
            mails |= kind == "smtp"
        if mails and activation.mail is None:
            self.error(path, "an `smtp` destination needs `mail:` with at least `to:` "
                             "(the recipients)")
        if activation.mail is not None and not mails and all_known:
            self.error((*path, "mail"), "`mail:` is set but no destination is an `smtp` "
                                        "connection")
        if len(set(activation.destinations)) != len(activation.destinations):
            self.error(to_path, "a destination is listed twice")
        extra = {"source_name": "file.csv"} if activation.courier else None
        self._template(activation.path, (*path, "path"), params)
        self._template(activation.file.name, (*path, "file", "name"), params, extra=extra)
        self._template(activation.seal.zip_name, (*path, "seal", "zip_name"), params,
                       extra={"source_name": "file.csv"})
        if activation.mail is not None:
            for key in ("subject", "body"):
                self._template(getattr(activation.mail, key), (*path, "mail", key), params,
                               extra=MAIL_SAMPLE)

    def _check_groups(self, s: dict[str, dict[str, Any]], connections: Mapping[str, Any],
                      catalog: SqlCatalog, params: Mapping[str, Any]) -> None:
        for name, group in s["courier_groups"].items():
            path = ("courier_groups", name)
            for i, courier in enumerate(group.couriers):
                self._known("couriers", courier, (*path, "couriers", i), "courier")
            if group.missing_files == "wait" and group.wait is None:
                self.error(path, "`missing_files: wait` needs `wait: {up_to: 2h}` (how long to "
                                 "wait for the files)")
            if group.wait is not None and group.missing_files != "wait":
                self.error((*path, "wait"), "is only used with `missing_files: wait`")
            if group.missing_files == "wait" and group.schedule is None:
                self.error(path, "`missing_files: wait` needs a `schedule:` (the deadline "
                                 "counts from each scheduled time)")
            if name in s["orchestration_groups"]:
                self.error(path, f"an orchestration group is also named {name!r}; group names "
                                 "make job names, so they must differ")
        for name, group in s["orchestration_groups"].items():
            path = ("orchestration_groups", name)
            for key, section, what in (("activations", "activations", "activation"),
                                       ("queries", "queries", "query"),
                                       ("databases", "databases", "database")):
                for i, item in enumerate(getattr(group, key)):
                    self._known(section, item, (*path, key, i), what)
            if group.after is not None:
                self._known("courier_groups", group.after, (*path, "after"), "courier group")
        jobs = {"workflow", *self.known["courier_groups"], *self.known["orchestration_groups"],
                *self.known["automations"]}
        for name, profile in s["profiles"].items():
            self._check_profile(("profiles", name), profile, connections)
        for name, automation in s["automations"].items():
            self._check_automation(("automations", name), automation, connections, params)
            self._check_chain(("automations", name), name, s["automations"])
            if name in s["courier_groups"] or name in s["orchestration_groups"]:
                self.error(("automations", name), f"a group is also named {name!r}; names make "
                                                  "job names, so they must differ")
        for name, trigger in s["triggers"].items():
            path = ("triggers", name)
            if trigger.job not in jobs:
                self.error((*path, "job"), f"unknown job {trigger.job!r} (known: "
                                           f"{', '.join(sorted(jobs))})")
            when, where = trigger.when, (*path, "when")
            if isinstance(when, spec.FileChange | spec.SqlChange) and when.connection and \
                    self._known("connections", when.connection, (*where, "connection"),
                                "connection"):
                kind = getattr(connections.get(when.connection), "kind", None)
                wanted = ("sql",) if isinstance(when, spec.SqlChange) else FILE_KINDS
                if kind not in wanted:
                    self.error((*where, "connection"), f"a {when.kind} trigger needs a "
                                                       f"{' or '.join(wanted)} connection, "
                                                       f"not {kind}")
            if isinstance(when, spec.FileChange):
                self._template(when.path, (*where, "path"), params)
            if isinstance(when, spec.TableChange) and when.table not in catalog.tables:
                self.error((*where, "table"), f"unknown table {when.table!r} (known: "
                                              f"{catalog.describe(when.table)})")
            if isinstance(when, spec.PythonTrigger) and (problem := callable_problem(
                    when.callable)):
                self.error((*where, "callable"), problem)
        for name, alert in s["alerts"].items():
            self._check_alert(("alerts", name), alert, connections, jobs)

    def _check_quality(self, path: Path_, checks: list[Any], columns: set[str] | None) -> None:
        """Check names unique per table; columns known where the table's columns are."""
        from assets.quality import check_name

        seen: set[str] = set()
        for i, check in enumerate(checks):
            where = (*path, "quality", i)
            name = check_name(check)
            if name in seen:
                self.error(where, f"two checks are named {name!r}; give one a `name:`")
            seen.add(name)
            named = [*getattr(check, "columns", []), *([check.column] if getattr(
                check, "column", None) else [])]
            for column in named if columns is not None else []:
                if column not in columns:
                    self.error(where, f"unknown column {column!r} (known: "
                                      f"{', '.join(sorted(columns))})")
            if isinstance(check, spec.RowCountCheck) and check.min is None and check.max is None:
                self.error(where, "a row_count check needs `min:` and/or `max:`")

    def _check_alert(self, path: Path_, alert: Any, connections: Mapping[str, Any],
                     jobs: set[str]) -> None:
        for i, job in enumerate(alert.jobs or []):
            if job not in jobs:
                self.error((*path, "jobs", i), f"unknown job {job!r} (known: "
                                               f"{', '.join(sorted(jobs))})")
        for event, template in alert.templates.items():
            if event not in alert.events:
                self.error((*path, "templates", event), f"this reporter does not send "
                                                        f"{event!r} (send_on: {alert.send_on})")
            try:
                check_overrides(event, template.model_dump(exclude_none=True))
            except ValueError as bad:
                self.error((*path, "templates", event), str(bad))
        if isinstance(alert, spec.MailAlert):
            if self._known("connections", alert.connection, (*path, "connection"),
                           "connection"):
                kind = getattr(connections.get(alert.connection), "kind", None)
                if kind != "smtp":
                    self.error((*path, "connection"), f"a mail reporter needs an smtp "
                                                      f"connection, not {kind}")
            if not alert.to and not alert.sms_to:
                self.error(path, "a mail reporter needs `to:` or `sms_to:` (whom to tell)")
            for key in ("to", "sms_to"):
                for i, address in enumerate(getattr(alert, key)):
                    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
                        self.error((*path, key, i), f"{address!r} is not a mail address")
        if isinstance(alert, spec.TwilioAlert):
            for key, numbers in (("from", [alert.from_]), ("to", alert.to)):
                for number in numbers:
                    if not re.fullmatch(r"\+[1-9]\d{6,14}", number):
                        self.error((*path, key), f"{number!r} is not an E.164 number "
                                                 "(+ and the country code, e.g. +15555550100)")

    def _check_forwarding(self, path: Path_, activation: spec.Activation) -> None:
        """Forwarded files go as they arrived: only their name (and sealing) can change."""
        ignored = sorted(activation.file.model_fields_set - {"name"})
        if ignored:
            self.error((*path, "file"), f"{', '.join(ignored)}: forwarded files are sent as "
                                        "they arrived; only `file.name` applies")
        courier = self.couriers.get(activation.courier or "")
        several = courier is not None and any(c in (courier.path or "") for c in "*?[")
        for key, template in (("file", activation.file.name), ("seal", activation.seal.zip_name)):
            if several and template and "source_name" not in template:
                where = (*path, "file", "name") if key == "file" else (*path, "seal", "zip_name")
                self.error(where, f"courier `{activation.courier}` may bring several files, "
                                  "which would all get this one name: use {{ source_name }} in "
                                  "it, or leave it out to keep their names")

    def _check_courier(self, path: Path_, courier: spec.Courier, conn: Any) -> None:
        if conn is None:
            return
        if isinstance(conn, spec.SqlConnection):
            if not courier.query or courier.path:
                self.error(path, "a courier from a `sql` connection needs `query:` (and no "
                                 "`path:`)")
        elif not courier.path or courier.query:
            self.error(path, f"a courier from a `{conn.kind}` connection needs `path:` (and no "
                             "`query:`)")

    def _template(self, template: str | None, path: Path_, params: Mapping[str, Any],
                  sql: bool = False, extra: Mapping[str, Any] | None = None) -> None:
        if template:
            problem = check_template(template, params, sql, extra)
            if problem:
                self.error(path, problem)

    def _sql_deps(self, path: Path_, table: spec.SqlTable, catalog: SqlCatalog,
                  params: Mapping[str, Any]) -> set[str]:
        if not table.sql:
            return set()
        self._template(table.sql, (*path, "sql_file" if table.sql_file else "sql"), params,
                       sql=True)
        refs, unknown = catalog.references(table.sql)
        for ref in unknown:
            self.error((*path, "sql_file" if table.sql_file else "sql"),
                       f"unknown table {ref!r} in the SQL (known: {catalog.describe(ref)})")
        for ref in table.depends_on:
            if ref not in catalog.tables:
                self.error((*path, "depends_on"), f"unknown table {ref!r} (known: "
                                                  f"{catalog.describe(ref)})")
        return refs | set(table.depends_on)

    def _check_cycles(self, graph: dict[str, set[str]]) -> None:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(node: str) -> None:
            state[node] = 1
            stack.append(node)
            for upstream in sorted(graph.get(node, ())):
                if state.get(upstream) == 1:
                    cycle = [*stack[stack.index(upstream):], upstream]
                    schema, table = node.split(".", 1)
                    path = ("queries", table) if schema == "query" else (
                        "databases", schema, "tables", table)
                    self.error(path, "dependency cycle: " + " → ".join(cycle))
                elif upstream in graph and not state.get(upstream):
                    visit(upstream)
            stack.pop()
            state[node] = 2

        for node in sorted(graph):
            if not state.get(node):
                visit(node)


def callable_problem(target: str) -> str | None:
    """Why `module:function` cannot be called, or None (imported at load, so a typo fails
    before any night run)."""
    import importlib

    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as failed:  # any import error is the spec's problem to report
        return f"cannot import {module_name!r}: {type(failed).__name__}: {failed}"
    if not callable(getattr(module, function, None)):
        return f"module {module_name!r} has no function {function!r}"
    return None


def _cross_workflow_errors(loaded: list[LoadedWorkflow]) -> list[SpecError]:
    """Names shared by the whole code location: workflows and every asset key."""
    errors, owners = [], {}
    for item in loaded:
        spec_ = item.spec
        keys = {("workflow", spec_.workflow.name): ("workflow", "name")}
        keys |= {("courier", c): ("couriers", c) for c in spec_.couriers}
        keys |= {("domain", t): ("domain_tables", t) for t in spec_.domain_tables}
        keys |= {("db", db, t): ("databases", db, "tables", t)
                 for db, d in spec_.databases.items() for t in d.tables}
        keys |= {("query", q): ("queries", q) for q in spec_.queries}
        keys |= {("activation", a): ("activations", a) for a in spec_.activations}
        for key, path in keys.items():
            if key in owners and owners[key] != item.path:
                errors.append(SpecError(
                    _display(item.path), item.lines.get(path, 1), ".".join(path),
                    f"{'/'.join(key)} is also defined in {_display(owners[key])}; workflows "
                    "and asset keys are shared by the code location: rename one"))
            owners.setdefault(key, item.path)
    return errors
