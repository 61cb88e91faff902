"""Checks of the `automations:` and `profiles:` sections: steps and their connections,
fetched query sources, ETL and report steps, chains (children, loops, mutexes) and run-as
profiles. A mixin of the spec loader's validator, which supplies `error`, `_known`,
`_template` and `known`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from assets import spec
from assets.sql_statements import expression_problem
from resources.files import path_problem

Path_ = tuple[str | int, ...]


class AutomationChecks:
    known: dict[str, set[str]]

    def error(self, path: Iterable[str | int], message: str) -> None:
        raise NotImplementedError

    def _known(self, section: str, name: str, path: Path_, what: str) -> bool:
        raise NotImplementedError

    def _template(self, template: str | None, path: Path_, params: Mapping[str, Any],
                  sql: bool = False, extra: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError

    def _check_profile(self, path: Path_, profile: spec.Profile,
                       connections: Mapping[str, Any]) -> None:
        for original, swapped in profile.connections.items():
            where = (*path, "connections", original)
            if not (self._known("connections", original, where, "connection")
                    and self._known("connections", swapped, where, "connection")):
                continue
            kinds = (connections[original].kind, connections[swapped].kind)
            if kinds[0] != kinds[1]:
                self.error(where, f"{original!r} is a {kinds[0]} connection and {swapped!r} "
                                  f"a {kinds[1]} one; a profile swaps a connection for one "
                                  "of the same kind")

    def _check_chain(self, path: Path_, name: str,
                     automations: Mapping[str, spec.Automation]) -> None:
        """Steps or children, known children, no loops, one mutex per run, known profile."""
        automation = automations[name]
        if bool(automation.steps) == bool(automation.chain):
            self.error(path, "an automation has either `steps:` (what it does) or `chain:` "
                             "(the automations it runs), " + (
                                 "not both" if automation.steps else "and this one has neither"))
        if "mode" in automation.model_fields_set and not automation.chain:
            self.error((*path, "mode"), "`mode` is for a `chain:` (series or parallel); an "
                                        "automation's steps always run in order")
        if automation.run_as:
            self._known("profiles", automation.run_as, (*path, "run_as"), "profile")
        groups = {*self.known["courier_groups"], *self.known["orchestration_groups"]}
        for i, child in enumerate(automation.chain):
            where = (*path, "chain", i)
            if child in groups:
                if automation.chain.index(child) != i:
                    self.error(where, f"{child!r} is twice in this chain; run it once")
                continue
            if child not in self.known["automations"]:
                known = ", ".join(sorted({*self.known["automations"], *groups}))
                self.error(where, f"unknown automation or group {child!r} (known: {known})")
                continue
            if automation.chain.index(child) != i:
                self.error(where, f"{child!r} is twice in this chain; run it once")
            if (loop := self._chain_loop(child, automations, [name])) is not None:
                self.error(where, "a chain cannot run itself: " + " → ".join(loop))
        if self.errors or not automation.chain:
            return
        held = {a.mutex for a in self._descendants(name, automations)} - {None}
        if automation.mutex and held - {automation.mutex}:
            self.error((*path, "mutex"), f"what this chain runs holds mutex "
                                         f"{', '.join(sorted(held - {automation.mutex}))} and "
                                         f"a run holds one ({automation.mutex}): give the "
                                         "chain and what it runs the same mutex")
        elif len(held) > 1:
            self.error((*path, "chain"), f"the children hold different mutexes "
                                         f"({', '.join(sorted(held))}) and a run holds one: "
                                         "give them the same one")

    @staticmethod
    def _descendants(name: str, automations: Mapping[str, spec.Automation]
                     ) -> list[spec.Automation]:
        """The automations a chain runs, at any depth (group jobs left out)."""
        found = []
        for child in automations[name].chain:
            if child in automations:
                found += [automations[child], *AutomationChecks._descendants(child, automations)]
        return found

    def _chain_loop(self, name: str, automations: Mapping[str, spec.Automation],
                    trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail, name]
        for child in getattr(automations.get(name), "chain", []):
            if (loop := self._chain_loop(child, automations, [*trail, name])) is not None:
                return loop
        return None

    def _check_automation(self, path: Path_, automation: spec.Automation,
                          connections: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        names = automation.step_names()
        for i, (step, name) in enumerate(zip(automation.steps, names, strict=True)):
            where = (*path, "steps", i)
            if names.index(name) != i:
                self.error((*where, "name"), f"two steps are named {name!r}; step names must "
                                             "differ")
            values = {**params, **automation.params}
            wanted = {spec.SshStep: ("sftp",), spec.SqlStep: ("sql",), spec.AlarmStep: ("sql",),
                      spec.ReportStep: ("sql",), spec.SyncStep: ("sql",)}
            connection = getattr(step, "connection", None)
            if connection and self._known("connections", connection, (*where, "connection"),
                                          "connection"):
                kind = getattr(connections.get(connection), "kind", None)
                if kind not in wanted[type(step)]:
                    article = "an" if step.kind in ("alarm", "ssh") else "a"
                    self.error((*where, "connection"), f"{article} {step.kind} step needs a "
                                                       f"{' or '.join(wanted[type(step)])} "
                                                       f"connection, not {kind}")
            if isinstance(step, spec.SqlStep):
                self._template(step.sql, (*where, "sql"), values, sql=True)
            if isinstance(step, spec.AlarmStep):
                self._template(step.query, (*where, "query"), values, sql=True)
            if isinstance(step, spec.PythonStep):
                for j, arg in enumerate(step.args):
                    self._template(arg, (*where, "args", j), values)
                for j, name in enumerate(step.connections):
                    self._known("connections", name, (*where, "connections", j), "connection")
            if isinstance(step, spec.SqlStep | spec.AlarmStep):
                self._check_query_source(where, step, connections)
            if isinstance(step, spec.EtlStep):
                self._check_etl(where, step, values)
            if isinstance(step, spec.ReportStep):
                self._check_report(where, step, values)

    def _check_query_source(self, path: Path_, step: spec.SqlStep | spec.AlarmStep,
                            connections: Mapping[str, Any]) -> None:
        """A query fetched at run time: a file connection and a safe path, or a URL whose
        token never travels in clear text."""
        source_key, url_key = step.FETCH_KEYS
        source, url = step.file_source, step.url_source
        if step.allow_statements and not step.fetched:
            self.error((*path, "allow_statements"), f"only applies to a query fetched at run "
                                                    f"time (`{source_key}:` or `{url_key}:`)")
        if source is not None:
            where = (*path, source_key)
            if self._known("connections", source.connection, (*where, "connection"),
                           "connection"):
                kind = getattr(connections.get(source.connection), "kind", None)
                if kind not in spec.FILE_KINDS:
                    self.error((*where, "connection"), f"a query source needs a "
                                                       f"{', '.join(spec.FILE_KINDS)} connection, "
                                                       f"not {kind}")
            if problem := path_problem(source.path):
                self.error((*where, "path"), f"{source.path!r} {problem}; give a path "
                                             "relative to the connection's base")
        if url is not None and url.token is not None:
            host = urlsplit(url.url).hostname or ""
            if url.url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
                self.error((*path, url_key, "url"), "a token is sent only over https "
                                                            "(http would show it to the "
                                                            "network); use an https URL")

    def _check_etl(self, path: Path_, step: spec.EtlStep, params: Mapping[str, Any]) -> None:
        expressions = [(("computed", n), e) for n, e in step.computed.items()]
        expressions += [(("aggregates", n), e) for n, e in step.aggregates.items()]
        expressions += [(("filter",), step.filter)] if step.filter else []
        for key, expression in expressions:
            if problem := expression_problem(expression):
                self.error((*path, *key), problem)
            else:
                self._template(expression, (*path, *key), params, sql=True)
        grouped = bool(step.group_by or step.aggregates)
        if grouped and step.columns:
            self.error((*path, "columns"), "with `group_by` or `aggregates` the output is the "
                                           "group_by columns and the aggregates: leave "
                                           "`columns` out")
        names = [*step.group_by, *step.aggregates] if grouped else []
        for name in {n for n in names if names.count(n) > 1}:
            self.error((*path, "aggregates", name), f"{name!r} is both a group_by column and "
                                                    "an aggregate; rename the aggregate")
        for name in step.computed if not grouped and step.columns else []:
            if name not in step.columns:
                self.error((*path, "computed", name), f"computed column {name!r} is not in "
                                                      "`columns`, so it would be dropped; "
                                                      "add it there")

    def _check_report(self, path: Path_, step: spec.ReportStep,
                      params: Mapping[str, Any]) -> None:
        if not step.tables and step.chart is None:
            self.error(path, "a report needs `tables:` and/or a `chart:` (what to show)")
        for i, table in enumerate(step.tables):
            self._template(table.sql, (*path, "tables", i, "sql"), params, sql=True)
        if step.chart is not None:
            self._template(step.chart.sql, (*path, "chart", "sql"), params, sql=True)
            if step.chart.x and step.chart.x == step.chart.y:
                self.error((*path, "chart", "y"), "x and y must be two different columns")
        if step.file_name:
            self._template(step.file_name, (*path, "file_name"), params)
            if not step.file_name.endswith(".pdf") or "/" in step.file_name:
                self.error((*path, "file_name"), "a report's file name is one plain name "
                                                 "ending in .pdf")
