"""SQL text split into statements, for queries fetched at run time (and expressions checked).

A fetched query comes from outside the spec, so only the statement types a step allows are run
(`USE`, `SET`, `ATTACH`, `COPY`, `PRAGMA`... are removed by default). The split follows the
lexical rules DuckDB and PostgreSQL share: '' and E'\\'' strings, "quoted" names, $tag$ bodies,
-- line comments and nested /* */ comments; a `;` inside any of them ends nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# `create` only for tables, views, schemas and indexes: CREATE SECRET, EXTENSION, FUNCTION or
# MACRO from a fetched query would reach beyond the data.
DEFAULT_ALLOWED = (
    "select", "with", "insert", "update", "delete", "merge", "drop", "create table",
    "create temp table", "create temporary table", "create or replace table",
    "create or replace temp table", "create view", "create or replace view", "create schema",
    "create index", "create unique index")
MAX_RULE_WORDS = 4
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"\s+")
_CODE_RUN = re.compile(r"[^'\"`$;/\-\s]+")  # code up to the next char that may open something


class SqlTextError(ValueError):
    """The text cannot be split: a string, name or comment is never closed."""


@dataclass(frozen=True)
class Statement:
    text: str  # from its first character to its last code character (no trailing comment)
    words: tuple[str, ...]  # its first keywords, lower case ("create", "table")
    masked: str = ""  # the text without comments, every string shown as '…' (for logs)

    @property
    def kind(self) -> str:
        return self.words[0] if self.words else ""

    def short(self, width: int = 80) -> str:
        """One line for a log: strings masked (a SET may carry a password)."""
        one_line = " ".join(self.masked.split())
        return one_line if len(one_line) <= width else one_line[:width - 1] + "…"


def _skip_quoted(text: str, i: int, quote: str, backslash: bool) -> int:
    """Index just past the string or name that opens at text[i]."""
    j = i + 1
    while j < len(text):
        ch = text[j]
        if backslash and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if j + 1 < len(text) and text[j + 1] == quote:  # '' or "" inside
                j += 2
                continue
            return j + 1
        j += 1
    what = "name" if quote == '"' else "string"
    raise SqlTextError(f"a quoted {what} opened at character {i + 1} is never closed")


def _skip_block_comment(text: str, i: int) -> int:
    depth, j = 0, i
    while j < len(text):
        if text.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif text.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    raise SqlTextError(f"a /* comment opened at character {i + 1} is never closed")


def _tokens(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every lexical piece that matters: code, string, name, comment,
    `;`."""
    pieces: list[tuple[str, int, int]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            pieces.append(("comment", i, end))
        elif text.startswith("/*", i):
            end = _skip_block_comment(text, i)
            pieces.append(("comment", i, end))
        elif ch in "'\"`":
            escaped = ch == "'" and i > 0 and text[i - 1] in "eE" and (
                i == 1 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            end = _skip_quoted(text, i, ch, escaped)
            pieces.append(("string" if ch == "'" else "name", i, end))
        elif ch == "$" and (tag := _DOLLAR_TAG.match(text, i)) and not (
                i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = text.find(tag.group(0), tag.end())
            if close < 0:
                raise SqlTextError(f"a {tag.group(0)} string opened at character {i + 1} is "
                                   "never closed")
            end = close + len(tag.group(0))
            pieces.append(("string", i, end))
        elif ch == ";":
            end = i + 1
            pieces.append((";", i, end))
        elif ch.isspace():
            end = _SPACE.match(text, i).end()
        else:
            run = _CODE_RUN.match(text, i)
            end = run.end() if run and run.end() > i else i + 1
            pieces.append(("code", i, end))
        i = end
    return pieces


def split_statements(text: str) -> list[Statement]:
    """The statements of `text`, in order; empty ones (only comments) are dropped."""
    statements: list[Statement] = []
    pieces: list[tuple[str, int, int]] = []
    for kind, begin, end in [*_tokens(text), (";", len(text), len(text))]:
        if kind != ";":
            pieces.append((kind, begin, end))
            continue
        code = [p for p in pieces if p[0] != "comment"]
        if code:
            words = _WORD.findall(" ".join(text[b:e] if k != "string" else "''"
                                           for k, b, e in code))
            masked, at = [], code[0][1]
            for k, b, e in code:
                masked += [text[at:b], "'…'" if k == "string" else text[b:e]]
                at = e
            statements.append(Statement(text[pieces[0][1]:code[-1][2]],
                                        tuple(w.lower() for w in words[:MAX_RULE_WORDS]),
                                        "".join(masked)))
        pieces = []
    return statements


def keep_allowed(text: str, allowed: tuple[str, ...] | list[str]
                 ) -> tuple[list[Statement], list[Statement]]:
    """(kept, removed): a statement is kept when its first keywords start with an allowed
    entry ("select", "create table": up to four words)."""
    rules = [tuple(entry.lower().split()) for entry in allowed]
    kept, removed = [], []
    for statement in split_statements(text):
        if any(statement.words[:len(rule)] == rule for rule in rules):
            kept.append(statement)
        else:
            removed.append(statement)
    return kept, removed


def expression_problem(expression: str) -> str | None:
    """Why a spec's SQL expression cannot be pasted into a compiled SELECT, or None."""
    try:
        pieces = _tokens(expression)
    except SqlTextError as bad:
        return str(bad)
    if any(kind == ";" for kind, _, _ in pieces):
        return "holds a `;`: give one SQL expression, not statements"
    if any(kind == "comment" for kind, _, _ in pieces):
        return "holds a comment (-- or /*), which would hide the SQL after it"
    depth = 0
    for kind, begin, end in pieces:
        for ch in expression[begin:end] if kind == "code" else "":
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                return "closes a parenthesis it never opened"
    return "opens a parenthesis it never closes" if depth else None
