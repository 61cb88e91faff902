"""Files a spec names, resolved relative to the spec: SQL and remote scripts read in, Python
scripts, folders and key files made absolute, each checked now so a night run never finds
them missing."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assets import spec
from assets.sealing import public_key_problem
from orchestration.spec_problems import Path_, Problem

Resolved = tuple[Any, list[Problem]]  # (the item, resolved where it could be; its problems)


def resolve(base: Path, section: str, name: str, item: BaseModel) -> Resolved:
    """An item of `section` with the files it names resolved against `base`."""
    if isinstance(item, spec.FolderConnection) and not Path(item.path).is_absolute():
        return item.model_copy(update={"path": str((base / item.path).resolve())}), []
    if isinstance(item, spec.Database):
        problems: list[Problem] = []
        tables = {}
        for t, table in item.tables.items():
            tables[t], found = _sql(base, (section, name, "tables", t), table)
            problems += found
        return item.model_copy(update={"tables": tables}), problems
    if isinstance(item, spec.Query):
        return _sql(base, (section, name), item)
    if isinstance(item, spec.Automation):
        problems, steps = [], []
        for i, step in enumerate(item.steps):
            resolved, found = _step(base, (section, name, "steps", i), step)
            steps.append(resolved)
            problems += found
        return item.model_copy(update={"steps": steps}), problems
    if isinstance(item, spec.IdentityResolution):
        return _splink_model(base, (section, name, "probabilistic", "training", "model_file"),
                             item)
    if isinstance(item, spec.Activation) and item.seal.gpg is not None:
        return _recipients(base, (section, name, "seal", "gpg", "recipients"), item)
    return item, []


def _splink_model(base: Path, path: Path_, ident: spec.IdentityResolution) -> Resolved:
    """A given splink model's file, made absolute and checked now."""
    prob = ident.probabilistic
    if prob is None or not prob.training.model_file:
        return ident, []
    file = base / prob.training.model_file
    if not file.is_file():
        return ident, [Problem(path, f"no such file {str(file)!r} (a splink model JSON, saved "
                                     "by linker.misc.save_model_to_json; paths are relative to "
                                     "the spec file)")]
    training = prob.training.model_copy(update={"model_file": str(file.resolve())})
    return ident.model_copy(update={"probabilistic": prob.model_copy(
        update={"training": training})}), []


def _recipients(base: Path, path: Path_, sealed: spec.Activation | spec.DeliverStep
                ) -> Resolved:
    """An activation's or a deliver step's GPG recipients' key files, made absolute."""
    problems: list[Problem] = []
    keys = []
    gpg = sealed.seal.gpg
    if gpg is None:
        return sealed, []
    for i, key in enumerate(gpg.recipients):
        resolved, found = _key(base, (*path, i), key)
        keys.append(resolved)
        problems += found
    gpg = gpg.model_copy(update={"recipients": keys})
    seal = sealed.seal.model_copy(update={"gpg": gpg})
    return sealed.model_copy(update={"seal": seal}), problems


def _step(base: Path, path: Path_, step: Any) -> Resolved:
    """Files a step names: read (SQL, a remote script) or made absolute (a Python script or
    its folder)."""
    if isinstance(step, spec.SqlStep):
        given = [k for k in ("sql", "sql_file", "sql_source", "sql_url") if getattr(step, k)]
        if len(given) != 1:
            return step, [Problem(path, "give exactly one of `sql:`, `sql_file:`, "
                                        "`sql_source:` or `sql_url:`")]
        return (step, []) if step.sql_source or step.sql_url else _sql(base, path, step)
    if isinstance(step, spec.AlarmStep):
        given = [k for k in ("query", "query_source", "query_url") if getattr(step, k)]
        if len(given) != 1:
            return step, [Problem(path, "give exactly one of `query:`, `query_source:` or "
                                        "`query_url:`")]
    if isinstance(step, spec.SshStep):
        return _ssh(base, path, step)
    if isinstance(step, spec.PythonStep):
        script = (base / step.script).resolve()
        entry = script / "main.py" if script.is_dir() else script
        if not entry.is_file():
            return step, [Problem((*path, "script"), f"no such script {str(entry)!r} (a .py "
                                                     "file, or a folder with main.py, relative "
                                                     "to the spec file)")]
        return step.model_copy(update={"script": str(script)}), []
    if isinstance(step, spec.DeliverStep) and step.seal.gpg is not None:
        return _recipients(base, (*path, "seal", "gpg", "recipients"), step)
    return step, []


def _ssh(base: Path, path: Path_, step: spec.SshStep) -> Resolved:
    if bool(step.command) == bool(step.script_file):
        return step, [Problem(path, "give exactly one of `command:` or `script_file:`")]
    if not step.script_file:
        return step, []
    file = base / step.script_file
    if not file.is_file():
        return step, [Problem((*path, "script_file"), f"no such file {str(file)!r} (paths are "
                                                      "relative to the spec file)")]
    return step.model_copy(update={"command": file.read_text(encoding="utf-8")}), []


def _key(base: Path, path: Path_, key: str) -> tuple[str, list[Problem]]:
    """A recipient's public key file, checked now so a bad key never fails a night run."""
    file = base / key
    if not file.is_file():
        return key, [Problem(path, f"no such key file {str(file)!r} (paths are relative to the "
                                   "spec file)")]
    problem = public_key_problem(file)
    return str(file.resolve()), [Problem(path, problem)] if problem else []


def _sql(base: Path, path: Path_, table: Any) -> Resolved:
    if bool(table.sql) == bool(table.sql_file):
        return table, [Problem(path, "give exactly one of `sql:` or `sql_file:`")]
    if table.sql_file:
        file = base / table.sql_file
        if not file.is_file():
            return table, [Problem((*path, "sql_file"), f"no such file {str(file)!r} (paths are "
                                                        "relative to the spec file)")]
        return table.model_copy(update={"sql": file.read_text(encoding="utf-8")}), []
    return table, []
