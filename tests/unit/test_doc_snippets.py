"""Every YAML and shell snippet of README.md and docs/*.md, checked against the code: YAML
pieces of a spec load through the spec loader, shell snippets that can run on loopback run,
and the names the docs mention (run tags, environment variables, commands, make targets,
files) exist. The marker convention is in tests/doc_snippets.py and docs/test-suite.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from assets import names
from orchestration.spec_loader import SpecInvalid, load_workflow
from tests.doc_snippets import (
    DEFAULT_BASE,
    NEEDS_REASON,
    REPO,
    SHELL_KINDS,
    YAML_KINDS,
    Snippet,
    all_snippets,
    doc_files,
    fragment,
    merge,
    named,
)

SNIPPETS = all_snippets()
YAML_SNIPPETS = [s for s in SNIPPETS if s.is_yaml]
SHELL_SNIPPETS = [s for s in SNIPPETS if s.is_shell]
# Written by other branches at the same time; linked from the README before they land.
PENDING_DOCS = {"identity.md", "operations-cli.md", "ui.md", "validation.md", "testing.md",
                "semantic-tags-performance.md"}
# Files a spec example may name, relative to the spec: the demo's and the full spec's.
SPEC_FILES = [REPO / "workflows", REPO / "tests" / "snapshots" / "full_spec",
              REPO / "tests" / "fixtures"]
PACKAGE = ["assets", "orchestration", "resources", "sensors"]


def where(snippet: Snippet) -> str:
    return snippet.where


def test_the_docs_hold_snippets_of_each_kind():
    assert len(YAML_SNIPPETS) >= 15 and len(SHELL_SNIPPETS) >= 8, [s.where for s in SNIPPETS]


@pytest.mark.parametrize("snippet", YAML_SNIPPETS + SHELL_SNIPPETS, ids=where)
def test_every_snippet_says_how_it_is_checked(snippet: Snippet):
    kinds = YAML_KINDS if snippet.is_yaml else SHELL_KINDS
    assert snippet.kind in kinds, (
        f"{snippet.where}: a {snippet.language} snippet needs a marker on the line before its "
        f"fence, one of {sorted(kinds)}, e.g. `<!-- snippet: no-run: why not -->` "
        f"(see tests/doc_snippets.py)")
    if snippet.kind in NEEDS_REASON:
        assert len(snippet.reason) >= 10, f"{snippet.where}: say why, after `{snippet.kind}:`"


# ------------------------------------------------------------------------------- YAML


def spec_folder(tmp_path: Path) -> Path:
    """A scratch folder holding the files spec examples may name (keys, SQL, scripts)."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    for source in SPEC_FILES:
        shutil.copytree(source, folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.yaml", "__pycache__"))
    return folder


@pytest.mark.parametrize("snippet", [s for s in YAML_SNIPPETS if s.kind == "fragment"],
                         ids=where)
def test_a_yaml_fragment_loads_as_part_of_its_spec(snippet: Snippet, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "docs" / "examples"))  # python triggers' modules
    base = REPO / snippet.options.get("base", DEFAULT_BASE)
    spec = yaml.safe_load(base.read_text(encoding="utf-8"))
    others = named()
    for name in filter(None, snippet.options.get("with", "").split(",")):
        assert name in others, f"{snippet.where}: with={name}: no snippet name={name} here"
        merge(spec, fragment(others[name]))
    merge(spec, fragment(snippet))
    file = spec_folder(tmp_path) / base.name
    file.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:
        load_workflow(file)
    except SpecInvalid as invalid:
        pytest.fail(f"{snippet.where}: the example does not load:\n{invalid}", pytrace=False)


@pytest.mark.parametrize("snippet", [s for s in YAML_SNIPPETS if s.kind == "not-spec"],
                         ids=where)
def test_other_yaml_parses(snippet: Snippet):
    assert isinstance(yaml.safe_load(textwrap.dedent(snippet.text)), dict), snippet.where


def test_a_wrong_key_in_a_fragment_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The check can fail: a misspelt key and an unknown template variable are refused."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bad = Snippet(REPO / "README.md", 1, "yaml",
                  "couriers:\n  orders: {from: landing, pathh: x.csv}\n", "fragment")
    with pytest.raises(pytest.fail.Exception, match="pathh"):
        test_a_yaml_fragment_loads_as_part_of_its_spec(bad, tmp_path / "a", monkeypatch)
    bad = Snippet(REPO / "README.md", 1, "yaml",
                  "couriers:\n  orders: {from: landing, path: 'x_{{ no_such_day }}.csv'}\n",
                  "fragment")
    with pytest.raises(pytest.fail.Exception, match="no_such_day"):
        test_a_yaml_fragment_loads_as_part_of_its_spec(bad, tmp_path / "b", monkeypatch)


# ------------------------------------------------------------------------------ shell


def scratch_checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder that looks like a checkout after `make demo`'s set-up: `.venv` (this Python's
    environment), `workflows/`, and a data folder and Dagster home (deploy/dagster.yaml) of
    its own."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    shutil.copytree(REPO / "workflows", root / "workflows")
    (root / "data" / "dagster_home").mkdir(parents=True)  # as `make demo` leaves it
    shutil.copyfile(REPO / "deploy" / "dagster.yaml", root / "data" / "dagster_home" /
                    "dagster.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "STAGECOACH_DATA_DIR": str(root / "data"),
           "DAGSTER_HOME": str(root / "data" / "dagster_home")}
    for name in ("STAGECOACH_WORKFLOWS_DIR", "STAGECOACH_WAREHOUSE_URL", "STAGECOACH_EXECUTOR"):
        env.pop(name, None)
    return root, env


@pytest.mark.parametrize("snippet", [s for s in SHELL_SNIPPETS if s.kind == "run"], ids=where)
def test_a_runnable_shell_snippet_runs(snippet: Snippet, tmp_path: Path):
    root, env = scratch_checkout(tmp_path)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", snippet.text], cwd=root, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (f"{snippet.where} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


# ------------------------------------------------------------------ names the docs use


def docs_text() -> dict[str, str]:
    return {str(f.relative_to(REPO)): f.read_text(encoding="utf-8") for f in doc_files()}


def package_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for folder in PACKAGE
                     for p in (REPO / folder).rglob("*.py"))


def test_every_documented_stagecoach_tag_exists():
    tags = {value for value in vars(names).values()
            if isinstance(value, str) and value.startswith(names.TAG_PREFIX)}
    unknown = {(file, tag) for file, text in docs_text().items()
               for tag in re.findall(r"(?<![\w/.-])stagecoach/[a-z_]+", text) if tag not in tags}
    assert not unknown, f"tags the docs name that assets/names.py does not define: {unknown}"


def documented_variable_exists(variable: str, code: str) -> bool:
    """In the code as it is, or as a family prefix (`STAGECOACH_ALERT_`) in the code with the
    rest of the name as a quoted key beside it (`"RUN_URL"`), or a family the docs name whole
    (`STAGECOACH_CONN_`)."""
    if variable in code:
        return True
    cuts = [i + 1 for i, char in enumerate(variable) if char == "_"][1:]
    for cut in reversed(cuts):
        prefix, rest = variable[:cut], variable[cut:]
        if prefix in code and rest and (f'"{rest}"' in code or f'"{rest.lower()}"' in code):
            return True
    return False


def test_every_documented_stagecoach_variable_exists():
    """A STAGECOACH_* variable the docs name is read or set by the package or the tests."""
    code = package_text() + "\n".join(
        p.read_text(encoding="utf-8") for p in (REPO / "tests").rglob("*.py")
        if p.name != Path(__file__).name)
    code += (REPO / "deploy" / "production" / "stagecoach.env.example").read_text()
    unknown = {(file, variable) for file, text in docs_text().items()
               for variable in re.findall(r"\bSTAGECOACH_[A-Z0-9_]*", text)
               if not documented_variable_exists(variable, code)}
    assert not unknown, f"variables the docs name that the code never uses: {unknown}"
    assert not documented_variable_exists("STAGECOACH_ALERT_NO_SUCH", code)


def test_every_documented_command_and_make_target_exists():
    help_text = subprocess.run([sys.executable, "-m", "orchestration", "--help"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    commands = set(re.search(r"\{([\w,-]+)\}", help_text).group(1).split(","))
    assert {"validate", "demo", "run", "backfill"} <= commands
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    unknown = set()
    for file, text in docs_text().items():
        for command in re.findall(r"python -m orchestration ([a-z][\w-]*)", text):
            if command not in commands:
                unknown.add((file, f"python -m orchestration {command}"))
        for target in re.findall(r"`make ([a-z][\w-]*)", text):
            if target not in targets:
                unknown.add((file, f"make {target}"))
    assert not unknown, f"commands the docs name that do not exist: {unknown}"


def test_every_relative_link_leads_to_a_file():
    broken = set()
    for file in doc_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", file.read_text("utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path = (file.parent / target).resolve()
            if not path.exists() and path.name not in PENDING_DOCS:
                broken.add((str(file.relative_to(REPO)), target))
    assert not broken, f"links to files that do not exist: {broken}"


def anchors(file: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (lower case, punctuation dropped,
    spaces as hyphens)."""
    headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_to_a_section_finds_its_heading():
    broken = set()
    for file in doc_files():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", file.read_text("utf-8")):
            path = (file.parent / target).resolve() if target else file
            if path.suffix == ".md" and path.name not in PENDING_DOCS and (
                    anchor not in anchors(path)):
                broken.add((str(file.relative_to(REPO)), f"{target}#{anchor}"))
    assert not broken, f"links to headings that do not exist: {broken}"


def test_the_production_bind_addresses_are_the_documented_ones():
    """docs/operations.md's table of bind addresses is what the Procfile and units run: the
    unauthenticated gRPC code server listens on loopback only."""
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    production = REPO / "deploy" / "production"
    procfile = (production / "Procfile").read_text(encoding="utf-8")
    units = "\n".join(p.read_text() for p in (production / "systemd").glob("*.service"))
    assert "0.0.0.0" not in procfile + units
    for process, address in (("code", "127.0.0.1:4000"), ("web", "127.0.0.1:3000"),
                             ("webhook", "127.0.0.1:8080")):
        host, port = address.split(":")
        [line] = re.findall(rf"^{process}: (.+)$", procfile, re.M)
        assert re.search(rf"(-h|--host) {re.escape(host)} .*(-p|--port) {port}\b", line), line
        assert f"`{address}`" in operations, address


def yaml_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {k for v in value.values() for k in yaml_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in yaml_keys(v)}
    return set()


def test_every_key_of_the_spec_is_documented():
    """Each field of every spec model (assets/spec/) appears in the docs: as a key of a
    checked YAML example, or in backticks in the text."""
    from assets import spec

    documented = {key for s in YAML_SNIPPETS if s.kind == "fragment"
                  for key in yaml_keys(fragment(s))}
    for text in docs_text().values():
        for written in re.findall(r"`([A-Za-z_][\w.]*)", text):  # `a.b.key` documents each
            documented |= set(written.split("."))
    models = [model for model in vars(spec).values() if isinstance(model, type)
              and issubclass(model, pydantic.BaseModel)
              and model.__module__.startswith(spec.__name__)]
    missing = sorted({f"{model.__name__}.{field.alias or name}" for model in models
                      for name, field in model.model_fields.items()
                      if (field.alias or name) not in documented})
    assert not missing, f"spec keys the docs never mention: {missing}"
