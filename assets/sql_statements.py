"""SQL text split into statements, for queries fetched at run time (and expressions checked).

A fetched query comes from outside the spec, so only the statement types a step allows are run
(`USE`, `SET`, `ATTACH`, `COPY`, `PRAGMA`... are removed by default). The split must never see
a quote or a comment where the database does not (that would let a statement through inside
what looked like a string), so each database splits by its own rules:

- DuckDB: DuckDB's own parser (`duckdb.extract_statements`), which also names each statement's
  type; a statement whose first keywords and parsed type disagree is removed.
- PostgreSQL: PostgreSQL's lexical rules with standard_conforming_strings on: '' strings with
  '' doubling, E'' strings with backslash escapes, "quoted" names, $tag$ bodies (any letter,
  non-ASCII included, as PostgreSQL), -- comments to a newline or carriage return and nested
  /* */ comments; no backticks. A backslash inside a plain '' string is refused: with
  standard_conforming_strings off (a server setting, or one a query changes) PostgreSQL would
  read that string, and so the statements after it, differently.
"""

import re
from dataclasses import dataclass, field
from typing import Literal

Dialect = Literal["postgres", "duckdb"]

# `create` only for tables, views, schemas and indexes: CREATE SECRET, EXTENSION, FUNCTION,
# ROLE or MACRO from a fetched query would reach beyond the data; `drop` only of a table or
# view (DROP ROLE, DATABASE, SCHEMA ... CASCADE reach beyond the step's tables).
DEFAULT_ALLOWED = (
    "select", "with", "insert", "update", "delete", "merge", "drop table", "drop view",
    "create table", "create temp table", "create temporary table", "create or replace table",
    "create or replace temp table", "create view", "create or replace view", "create schema",
    "create index", "create unique index")
MAX_RULE_WORDS = 6
# DuckDB's parsed type each first keyword may have (a cross-check of the keywords read here).
_DUCKDB_TYPES = {
    "select": {"SELECT"}, "with": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "insert": {"INSERT"}, "update": {"UPDATE"}, "delete": {"DELETE"}, "merge": {"MERGE_INTO"},
    "create": {"CREATE"}, "drop": {"DROP"}, "values": {"SELECT"}}
_SPACE = " \t\n\r\f\v"  # PostgreSQL's whitespace; any other character is part of a token
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PARAM = re.compile(r"\$[0-9]+")
_BIND = re.compile(r"(?<![:\w]):(\w+)")


class SqlTextError(ValueError):
    """The text cannot be split: a string, name or comment is never closed, or the database
    could read it in more than one way."""


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL script, with what its allow-list check needs."""

    text: str  # from its first character to its last code character (no trailing `;`)
    words: tuple[str, ...]  # its first keywords, lower case ("create", "table")
    masked: str = ""  # the text without comments, every string shown as '…' (for logs)
    shape_ok: bool = True  # False: a `create schema` with more than a name after it
    params: frozenset[str] = field(default_factory=frozenset)  # bound names it uses

    @property
    def kind(self) -> str:
        return self.words[0] if self.words else ""

    def short(self, width: int = 80) -> str:
        """One line for a log: strings masked (a SET may carry a password)."""
        one_line = " ".join(self.masked.split())
        return one_line if len(one_line) <= width else one_line[:width - 1] + "…"


# ---------------------------------------------------------------- PostgreSQL's lexical rules


def _is_ident_start(ch: str) -> bool:
    return ("a" <= ch.lower() <= "z") or ch == "_" or ord(ch) >= 0x80


def _is_ident_char(ch: str) -> bool:
    return _is_ident_start(ch) or "0" <= ch <= "9" or ch == "$"


def _skip_quoted(text: str, i: int, quote: str, backslash: bool, plain_string_check: bool
                 ) -> int:
    """Index just past the string or name whose opening quote is text[i]."""
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            if backslash:
                j += 2
                continue
            if plain_string_check:
                raise SqlTextError(
                    f"the string opened at character {i + 1} holds a backslash, which "
                    "PostgreSQL reads as an escape when standard_conforming_strings is off; "
                    "write it as an E'...' string with the backslash doubled")
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


def _tokens(text: str, strict: bool = False) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every token, scanned left to right as PostgreSQL does: `word`
    (a name or keyword), `name` ("quoted"), `string`, `comment`, `;` and `code` (numbers,
    operators, punctuation). `strict`: refuse a backslash in a plain '' string."""
    pieces: list[tuple[str, int, int]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        kind = "code"
        if ch in _SPACE:
            i += 1
            continue
        if text.startswith("--", i):
            end = min([p for p in (text.find("\n", i), text.find("\r", i)) if p >= 0]
                      or [len(text)])
            kind = "comment"
        elif text.startswith("/*", i):
            end, kind = _skip_block_comment(text, i), "comment"
        elif ch == "'":
            end, kind = _skip_quoted(text, i, "'", False, strict), "string"
        elif ch == '"':
            end, kind = _skip_quoted(text, i, '"', False, False), "name"
        elif ch in "eE" and text.startswith("'", i + 1):
            end, kind = _skip_quoted(text, i + 1, "'", True, False), "string"
        elif ch in "uU" and text.startswith("&", i + 1) and text[i + 2:i + 3] in ("'", '"'):
            quote = text[i + 2]
            end = _skip_quoted(text, i + 2, quote, False, strict and quote == "'")
            kind = "string" if quote == "'" else "name"
        elif _is_ident_start(ch):
            end = i + 1
            while end < len(text) and _is_ident_char(text[end]):
                end += 1
            kind = "word"
        elif ch == "$" and (tag := _DOLLAR_TAG.match(text, i)):
            close = text.find(tag.group(0), tag.end())
            if close < 0:
                raise SqlTextError(f"a {tag.group(0)} string opened at character {i + 1} is "
                                   "never closed")
            end, kind = close + len(tag.group(0)), "string"
        elif ch == "$" and (param := _PARAM.match(text, i)):
            end = param.end()
        elif number := _NUMBER.match(text, i):
            end = number.end()
        elif ch == ";":
            end, kind = i + 1, ";"
        else:
            end = i + 1
        pieces.append((kind, i, end))
        i = end
    return pieces


def _statement(text: str, pieces: list[tuple[str, int, int]],
               params: frozenset[str] | None = None) -> Statement | None:
    """One statement from its tokens (comments included), or None when it holds no code."""
    code = [p for p in pieces if p[0] != "comment"]
    if not code:
        return None
    masked, at = [], pieces[0][1]
    for kind, begin, end in pieces:
        masked += [text[at:begin], "'…'" if kind == "string" else " " if kind == "comment"
                   else text[begin:end]]
        at = end
    kinds, values = [k for k, _, _ in code], [text[b:e] for _, b, e in code]
    start = 1 if values[0] == "(" else 0  # `(select ...)`
    words: list[str] = []
    for kind, value in zip(kinds[start:], values[start:], strict=True):
        if kind != "word" or len(words) == MAX_RULE_WORDS:
            break
        words.append(value.lower())
    body = text[pieces[0][1]:code[-1][2]]
    return Statement(body, tuple(words), "".join(masked).strip(), _shape_ok(kinds, values),
                     frozenset(_BIND.findall(body)) if params is None else params)


def _shape_ok(kinds: list[str], values: list[str]) -> bool:
    """A `create schema` names one schema and nothing more: PostgreSQL runs schema elements
    after the name (`create schema s grant ...`, `create schema s create ...`)."""
    lowered = [v.lower() if k == "word" else v for k, v in zip(kinds, values, strict=True)]
    if lowered[:2] != ["create", "schema"]:
        return True
    rest = lowered[2:]
    if rest[:3] == ["if", "not", "exists"]:
        rest = rest[3:]
    rest_kinds = kinds[len(kinds) - len(rest):]
    if len(rest) == 3 and rest[1] == ".":  # database.schema
        return rest_kinds[0] in ("word", "name") and rest_kinds[2] in ("word", "name")
    return len(rest) == 1 and rest_kinds[0] in ("word", "name")


def _postgres_statements(text: str) -> list[Statement]:
    statements: list[Statement] = []
    pieces: list[tuple[str, int, int]] = []
    for kind, begin, end in [*_tokens(text, strict=True), (";", len(text), len(text))]:
        if kind != ";":
            pieces.append((kind, begin, end))
            continue
        if statement := _statement(text, pieces):
            statements.append(statement)
        pieces = []
    return statements


# ---------------------------------------------------------------- DuckDB's own parser

_DUCKDB_KINDS = {"keyword": "word", "string_const": "string", "comment": "comment",
                 "numeric_const": "code", "operator": "code"}


def _duckdb_pieces(text: str) -> list[tuple[str, int, int]]:
    """DuckDB's own tokens of one statement, in the kinds the PostgreSQL scan uses."""
    import duckdb

    tokens = duckdb.tokenize(text)
    pieces = []
    for n, (start, token) in enumerate(tokens):
        end = tokens[n + 1][0] if n + 1 < len(tokens) else len(text)
        end = start + len(text[start:end].rstrip())
        kind = _DUCKDB_KINDS.get(token.name, "code")
        if token.name == "identifier":
            kind = "name" if text[start] == '"' else "word"
        pieces.append((kind, start, end))
    return pieces


def _duckdb_statements(text: str) -> list[Statement]:
    import duckdb

    try:
        parsed = duckdb.extract_statements(text)
    except duckdb.Error as bad:
        raise SqlTextError(f"DuckDB cannot parse it: {str(bad).strip().splitlines()[0]}"
                           ) from None
    statements = []
    for item in parsed:
        statement = _statement(item.query, _duckdb_pieces(item.query.rstrip(_SPACE + ";")),
                               frozenset(item.named_parameters))
        if statement is None:
            continue
        again = duckdb.extract_statements(statement.text)  # what runs is this text alone
        if len(again) != 1 or again[0].type != item.type:
            raise SqlTextError(f"DuckDB reads the statement {statement.short(40)!r} "
                               "differently on its own")
        expected = _DUCKDB_TYPES.get(statement.kind)
        if expected is not None and item.type.name not in expected:  # keywords and type differ
            statement = Statement(statement.text, (f"({item.type.name.lower()})",),
                                  statement.masked, False, statement.params)
        statements.append(statement)
    return statements


# ---------------------------------------------------------------- public interface


def split_statements(text: str, dialect: Dialect = "postgres") -> list[Statement]:
    """The statements of `text`, in order, as the database will read them; empty ones (only
    comments) are dropped."""
    return _duckdb_statements(text) if dialect == "duckdb" else _postgres_statements(text)


def keep_allowed(text: str, allowed: tuple[str, ...] | list[str], dialect: Dialect = "postgres"
                 ) -> tuple[list[Statement], list[Statement]]:
    """(kept, removed): a statement is kept when its first keywords start with an allowed
    entry ("select", "create table") and its shape is one a fetched query may run."""
    rules = [tuple(entry.lower().split()) for entry in allowed]
    kept, removed = [], []
    for statement in split_statements(text, dialect):
        if statement.shape_ok and any(statement.words[:len(rule)] == rule for rule in rules):
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
    if "`" in expression:
        return "holds a backtick, which DuckDB reads as a quote: use \"double quotes\""
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
