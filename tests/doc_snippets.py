"""The fenced YAML and shell snippets of README.md and docs/*.md, with the comment that says how
each is checked (docs/test-suite.md, "Documentation snippets", describes the convention).

A snippet's marker is an HTML comment on the line before its fence (blank lines allowed):
  <!-- snippet: fragment [name=ID] [with=ID,ID] [base=PATH] -->   YAML, the default: merged
      section by section into a spec (base: workflows/acme_retail.yaml) with the snippets of
      the same file named in `with`, then loaded by the spec loader
  <!-- snippet: not-spec: REASON -->  YAML that is no workflow spec: it must parse
  <!-- snippet: run -->               shell: run by bash in a scratch checkout (exit 0)
  <!-- snippet: run-e2e -->           shell: run under a real `dagster dev` by
                                      tests/e2e/test_doc_webhook_snippets.py
  <!-- snippet: no-run: REASON -->    shell: not run, for the reason given
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
YAML_LANGUAGES = {"yaml", "yml"}
SHELL_LANGUAGES = {"bash", "sh", "shell"}
DEFAULT_BASE = "workflows/acme_retail.yaml"
YAML_KINDS = {"fragment", "not-spec"}
SHELL_KINDS = {"run", "run-e2e", "no-run"}
NEEDS_REASON = {"not-spec", "no-run"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[\w-]*)[ \t]*$")
MARKER = re.compile(r"^[ \t]*<!--\s*snippet:\s*(?P<body>.*?)\s*-->[ \t]*$")


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Snippet:
    file: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    kind: str = ""
    reason: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"

    @property
    def is_yaml(self) -> bool:
        return self.language in YAML_LANGUAGES

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES


def _marker(lines: list[str], fence: int) -> str | None:
    """The marker body just before the fence at index `fence` (blank lines skipped)."""
    index = fence - 1
    while index >= 0 and not lines[index].strip():
        index -= 1
    if index >= 0 and (found := MARKER.match(lines[index])):
        return found.group("body")
    return None


def parse_marker(body: str | None, yaml: bool) -> tuple[str, str, dict[str, str]]:
    """(kind, reason, options) of a marker body; YAML without a marker is a fragment."""
    if body is None:
        return ("fragment", "", {}) if yaml else ("", "", {})
    head, _, reason = body.partition(":")
    kind, *words = head.split()
    if kind in NEEDS_REASON:
        return kind, reason.strip(), {}
    options = dict(word.split("=", 1) for word in words if "=" in word)
    return kind, "", options


def snippets(file: Path) -> list[Snippet]:
    """Every fenced block of `file` with its marker (code blocks of any language included)."""
    lines = file.read_text(encoding="utf-8").split("\n")
    found, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.group("indent"), opening.group("language").lower()
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                for line in lines[index + 1:end]]
        kind, reason, options = parse_marker(_marker(lines, index),
                                             yaml=language in YAML_LANGUAGES)
        found.append(Snippet(file, index + 1, language, "\n".join(body) + "\n", kind, reason,
                             options))
        index = end + 1
    return found


def all_snippets() -> list[Snippet]:
    return [snippet for file in doc_files() for snippet in snippets(file)]


def merge(into: dict[str, Any], piece: dict[str, Any]) -> dict[str, Any]:
    """`piece` merged into `into`, mappings key by key (the piece wins elsewhere)."""
    for key, value in piece.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def nested(path: str, value: dict[str, Any]) -> dict[str, Any]:
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


def fragment(snippet: Snippet) -> dict[str, Any]:
    """The snippet as a piece of a whole spec (placed under its `at=` path)."""
    piece = yaml.safe_load(textwrap.dedent(snippet.text))
    assert isinstance(piece, dict), f"{snippet.where}: a fragment is a mapping"
    return nested(snippet.options["at"], piece) if "at" in snippet.options else piece


def named() -> dict[str, Snippet]:
    """The snippets marked `name=ID`, across every doc (an ID names one snippet)."""
    marked = [s for s in all_snippets() if "name" in s.options]
    found = {s.options["name"]: s for s in marked}
    assert len(found) == len(marked), [s.where for s in marked]
    return found
