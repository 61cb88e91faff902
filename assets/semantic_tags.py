"""The semantic tags: one registry, each tag with its SQL, result type, options and example.

Every tag compiles to a DuckDB expression over a trimmed, non-empty text value `v`, so a 2 GB
file streams through one engine (also when the warehouse is PostgreSQL: DuckDB reads the files
and standardises, PostgreSQL receives the rows). A value the tag cannot read becomes NULL and is
counted as invalid (see `on_invalid`).

A value a tag uses several times (the phone's digits, the collapsed name) is named with `let`:
a load computes it once, as a column of a projection below the tag's own (`Staged`); a single
expression (tests, one-off queries) writes it in place (`inline`). DuckDB lambdas, the old way
to name a value, cost four times as much: a regex inside a lambda is slow.
"""

import contextlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import duckdb
import email_validator
import phonenumbers
import pyarrow as pa
import pycountry
from duckdb.func import FunctionNullHandling, PythonUDFType

from assets import phone_sql, spec
from assets.phone_sql import literal
from resources.warehouse import quote_ident

DEFAULT_DATE_FORMATS = ["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d", "%d-%b-%Y"]
DEFAULT_DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M",
                            "%Y-%m-%dT%H:%M:%S%z"]
# Lower-case when another word follows: `DE LA CRUZ` → `de la Cruz`, `VAN DER BERG` → `van der
# Berg`. A particle that is the last word is a name of its own (`Jan DE` → `Jan De`).
PARTICLES = ("van", "von", "der", "den", "de", "la", "le", "del", "della", "di", "da", "du",
             "dos", "das", "ter", "ten", "zu")
APOSTROPHES = ("'", "\u2019")


Let = Callable[[str, str], str]


def inline(_name: str, value: str) -> str:
    """`let` for a single expression: the value written where it is used."""
    return f"({value})"


class Staged:
    """`let` for a load: each named value becomes a column computed once, in a projection
    below the one that uses it (`lets`, in order; each may use the ones before it)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.lets: list[tuple[str, str]] = []

    def __call__(self, name: str, value: str) -> str:
        for ref, known in self.lets:
            if known == value:
                return ref
        ref = quote_ident(f"{self.prefix}{name}{len(self.lets)}")
        self.lets.append((ref, value))
        return ref


@dataclass(frozen=True)
class Tag:
    """A semantic tag: its DuckDB expression, result type, spec options and a docs example."""

    sql: Callable[[str, spec.ColumnMapping, Let], str]
    result: str = "VARCHAR"
    options: tuple[str, ...] = ()
    example: tuple[str, str] = ("", "")


def _same(v: str, _: spec.ColumnMapping, _let: Let) -> str:
    return v


# Plain addresses that email-validator surely accepts, answered in SQL; the rest (IDN, quoted
# or odd local parts, `--` in a domain, special-use TLDs) go to email-validator. The length
# limit counts characters where email-validator counts bytes: a long non-ASCII address goes
# to email-validator.
_LOCAL = "A-Za-z0-9_%+'\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff-"  # and Latin-1 letters
_PLAIN_EMAIL = (f"^[{_LOCAL}]+(\\.[{_LOCAL}]+)*@([A-Za-z0-9]([A-Za-z0-9-]{{0,61}}"
                "[A-Za-z0-9])?\\.)+[A-Za-z]{2,24}$")
_SPECIAL_TLDS = ("arpa", "invalid", "local", "localhost", "onion", "test")


def _email(v: str, mapping: spec.ColumnMapping, let: Let) -> str:
    # The lower-cased value is named once: the special-use TLD test reads its end (the regex
    # has made the TLD the letters after the last dot, so `.test` at the end is that TLD),
    # and it is the result when the local part is lower-cased too.
    lo = let("lo", f"lower({v})")
    special = " OR ".join(f"suffix({lo}, {literal('.' + t)})" for t in _SPECIAL_TLDS)
    plain = (f"regexp_full_match({v}, {literal(_PLAIN_EMAIL)}) "
             f"AND strlen({v}) <= 254 AND strlen(split_part({v}, '@', 1)) <= 64 "
             f"AND NOT contains({v}, '--') AND NOT ({special})")
    local = f"split_part({v}, '@', 1)"
    fast = lo if mapping.lowercase_local else f"{local} || '@' || lower(split_part({v}, '@', 2))"
    option = literal("t" if mapping.lowercase_local else "f")
    return (f"CASE WHEN NOT contains({v}, '@') THEN NULL WHEN {plain} THEN {fast} "
            f"ELSE {EMAIL_UDF}({v}, {option}) END")


def _part(p: str, i: str) -> str:
    """One hyphen-separated part of a lower-cased word, capitalised as people write it."""
    apostrophe = f"p[2] IN ({', '.join(literal(a) for a in APOSTROPHES)}) AND length(p) > 2"
    return (f"CASE WHEN p LIKE 'mc_%' THEN 'Mc' || upper(p[3]) || p[4:] "
            f"WHEN regexp_full_match(p, 'mac[bcdfgjklmnpqrstvwz]\\w{{2,}}') "
            f"THEN 'Mac' || upper(p[4]) || p[5:] "
            f"WHEN {apostrophe} THEN (CASE WHEN p[1] = 'd' AND {i} > 1 THEN 'd' "
            f"ELSE upper(p[1]) END) || p[2] || upper(p[3]) || p[4:] "
            f"ELSE upper(p[1]) || p[2:] END")


def _lambda_bind(value: str, name: str, body: str) -> str:
    """`value` as `name` in `body` through a lambda: only where lists are built anyway."""
    return f"list_transform([{value}], lambda {name}: {body})[1]"


def _name(v: str, _: spec.ColumnMapping, let: Let) -> str:
    """Whitespace collapsed; only an all-upper or all-lower value is re-cased (a mixed-case one
    is as its owner wrote it; a script without case, such as Chinese, is never touched).

    Most names are one plain word, re-cased by string functions alone; lists are built only
    for the values that need them (words, hyphens, apostrophes, Mc/Mac)."""
    particles = ", ".join(literal(p) for p in PARTICLES)
    # `contains` first (cheap): a value with two blanks in a row or a tab, newline, form feed
    # or carriage return holds one of these; the regex then decides as before.
    blanks = " OR ".join(f"contains({v}, {c})" for c in ("'  '", "chr(9)", "chr(10)",
                                                          "chr(12)", "chr(13)"))
    n = let("n", f"CASE WHEN ({blanks}) AND regexp_matches({v}, '\\s\\s|[\\t\\n\\r]') "
                 f"THEN regexp_replace({v}, '\\s+', ' ', 'g') ELSE {v} END")
    word = (f"CASE WHEN i < len(ws) AND w IN ({particles}) THEN w ELSE list_aggr("
            f"list_transform(string_split(w, '-'), lambda p: {_part('p', 'i')}), "
            "'string_agg', '-') END")
    recased = _lambda_bind(f"string_split(lower({n}), ' ')", "ws",
                           f"list_aggr(list_transform(ws, lambda w, i: {word}), 'string_agg', "
                           "' ')")
    lo, up = let("lo", f"lower({n})"), let("up", f"upper({n})")
    simple = (f"NOT (contains({n}, ' ') OR contains({n}, '-') OR contains({n}, '''') OR "
              f"contains({n}, '\u2019') OR {lo} LIKE 'mc%' OR {lo} LIKE 'mac%')")
    return (f"CASE WHEN NOT (({n} = {up} OR {n} = {lo}) AND {up} <> {lo}) THEN {n} "
            f"WHEN {simple} THEN upper({n}[1]) || lower({n}[2:]) ELSE {recased} END")


PHONE_UDF, COUNTRY_UDF = "stagecoach_e164", "stagecoach_country"
_MEMO_LIMIT = 500_000  # distinct (region, value) pairs remembered across batches


def phone_region(mapping: spec.ColumnMapping) -> str | None:
    """The column's default region: `default_region`, else the region of the calling code."""
    if mapping.default_region:
        return mapping.default_region
    if mapping.default_country_code:
        region = phonenumbers.region_code_for_country_code(int(mapping.default_country_code))
        return None if region == phonenumbers.UNKNOWN_REGION else region
    return None


def e164(value: str, region: str) -> str | None:
    """Phonenumbers' own answer: parse, is_valid_number, format_number(E164); None if invalid.
    A number written with `00` that does not parse as dialled from `region` is tried once more
    as `+…` (people write 00 for + everywhere)."""
    for text in (value, "+" + value.lstrip()[2:]) if value.lstrip().startswith("00") \
            else (value,):
        try:
            number = phonenumbers.parse(text, None if region == "ZZ" else region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def email(value: str, lowercase_local: str) -> str | None:
    """email-validator's answer (syntax only, no DNS): the local part (lower-cased unless
    `lowercase_local: false`), `@`, the domain lower-cased and IDN-normalised; None if
    invalid."""
    try:
        valid = email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    local = valid.local_part.lower() if lowercase_local == "t" else valid.local_part
    return f"{local}@{valid.domain}"


_UNSEEN = object()


def _distinct_udf(fn: Callable[[str, str], str | None]
                  ) -> Callable[[pa.ChunkedArray, pa.ChunkedArray], pa.Array]:
    """An arrow UDF running `fn(value, option)` once per distinct pair (remembered across
    batches, up to a bound), never once per row.

    DuckDB calls it once per vector (about 2,000 rows, fewer under a CASE), so the per-call
    and per-value Python work is what a 20 M-row load pays: one pass over the batch as Python
    lists, one dict lookup per value, and only the values never seen go to `fn`. (Arrow's
    unique/index_in/take cost more per call than they save on a vector.)"""
    memo: dict[str, dict[str, str | None]] = {}
    size = [0]

    def batch(values: pa.ChunkedArray, options: pa.ChunkedArray) -> pa.Array:
        answers: list[str | None] = []
        last: str | None = None
        known: dict[str, str | None] = {}
        for value, option in zip(values.to_pylist(), options.to_pylist(), strict=True):
            if value is None or option is None:
                answers.append(None)
                continue
            if option != last:
                last, known = option, memo.setdefault(option, {})
            found = known.get(value, _UNSEEN)
            if found is _UNSEEN:
                if size[0] >= _MEMO_LIMIT:
                    memo.clear()
                    size[0] = 0
                    known = memo.setdefault(option, {})
                found = known[value] = fn(value, option)
                size[0] += 1
            answers.append(cast("str | None", found))
        return pa.array(answers, pa.string())

    return batch


EMAIL_UDF = "stagecoach_email"
UDFS = {PHONE_UDF: lambda value, region: e164(value, region), EMAIL_UDF: email,
        COUNTRY_UDF: lambda value, _: country(value),
        "stagecoach_state": lambda value, region: state(value, region)}


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Make the Python-backed tags callable in `con` (every connection that runs feed SQL)."""
    varchar = duckdb.sqltype("VARCHAR")
    for name, fn in UDFS.items():
        with contextlib.suppress(duckdb.InvalidInputException, duckdb.CatalogException):
            con.remove_function(name)
        con.create_function(name, _distinct_udf(fn), [varchar, varchar], varchar,
                            type=PythonUDFType.ARROW, null_handling=FunctionNullHandling.SPECIAL,
                            side_effects=False)


def _phone(v: str, mapping: spec.ColumnMapping, let: Let) -> str:
    """E.164 by phonenumbers, with the row's region (`region_from`) or the column's default.

    Read in SQL by phonenumbers' own rules and patterns (`phone_sql`): North American numbers
    (a +1 number, or a national one in a +1 region, of 10 digits), and the numbers of the
    regions of `phone_sql.SQL_REGIONS` and the column's region, written with `+` or without;
    a national number of fewer than 10 digits in a +1 region is invalid. Everything else goes
    to phonenumbers over distinct values."""
    nanp = ", ".join(literal(r) for r in phone_sql.NANP)
    default = phone_region(mapping)
    r = f"coalesce({region_sql(mapping, default)}, 'ZZ')"
    if mapping.region_from:  # a UDF per row: compute it once
        r = let("r", r)
    # A value of digits and the usual separators (most phones) loses them with plain
    # replace(), cheaper than the regex that any other value needs.
    # (phonenumbers refuses a value of more than 250 characters, however few its digits)
    plain = let("plain", f"length({v}) <= 250 AND regexp_full_match({v}, '\\+?[0-9 ().-]+')")
    stripped = v
    for separator in "+ ().-":
        stripped = f"replace({stripped}, {literal(separator)}, '')"
    pd = let("pd", f"CASE WHEN {plain} THEN {stripped} "
                   f"ELSE regexp_replace({v}, '[^0-9]', '', 'g') END")
    pn = let("pn", f"CASE WHEN starts_with({v}, '+') THEN (CASE WHEN length({pd}) = 11 AND "
                   f"starts_with({pd}, '1') THEN {pd}[2:] END) WHEN {r} IN ({nanp}) THEN (CASE "
                   f"WHEN length({pd}) = 10 AND NOT starts_with({pd}, '0') THEN {pd} "
                   f"WHEN length({pd}) = 11 AND "
                   f"starts_with({pd}, '1') THEN {pd}[2:] END) END")
    # Written in place (one expression), the regional rules' steps, which use each other many
    # times over, would grow past any size: there phonenumbers reads those numbers (the same
    # answers, tested), and only loads, which name each step once, read them in SQL.
    regions = () if let is inline else phone_sql.SQL_REGIONS + ((default,) if default else ())
    read = let("read", f"{plain} AND {pn} IS NULL")  # a plain number North America leaves
    code, number = phone_sql.number_sql(v, pd, r, regions, let, read)
    valid = phone_sql.valid_sql(code, number, regions)
    # No ASCII digit: NULL, unless the value holds digits of another script (full-width,
    # Arabic-Indic...), which phonenumbers reads.
    return (f"CASE WHEN {pd} = '' AND NOT regexp_matches({v}, '\\p{{Nd}}') THEN NULL "
            f"WHEN {plain} AND {pn} IS NOT NULL THEN "
            f"{phone_sql.nanp_sql(pn)} WHEN {plain} AND NOT starts_with({v}, '+') AND {r} IN "
            f"({nanp}) AND length({pd}) < 10 AND NOT starts_with({pd}, '0') THEN NULL "
            f"WHEN {code} IS NOT NULL THEN (CASE WHEN {valid} THEN '+' || {code} || {number} "
            f"END) ELSE {PHONE_UDF}({v}, {r}) END")


# Postal codes by country: (pattern over the upper-cased value without spaces and dashes, SQL
# making the standard form from `{z}` (that compact value)). Short numeric codes are padded: a
# spreadsheet drops leading zeros (`2134` → `02134` in the US, `800` → `0800` in Australia).
POSTAL_CODES = {
    "US": ("\\d{1,5}|\\d{9}", "CASE WHEN length({z}) = 9 THEN {z}[1:5] || '-' || {z}[6:] "
                               "ELSE lpad({z}, 5, '0') END"),
    "CA": ("[ABCEGHJ-NPRSTVXY]\\d[ABCEGHJ-NPRSTV-Z]\\d[ABCEGHJ-NPRSTV-Z]\\d",
           "{z}[1:3] || ' ' || {z}[4:]"),
    "GB": ("[A-Z]{1,2}\\d[A-Z\\d]?\\d[A-Z]{2}", "{z}[1:-4] || ' ' || {z}[-3:]"),
    "FR": ("\\d{4,5}", "lpad({z}, 5, '0')"),
    "DE": ("\\d{4,5}", "lpad({z}, 5, '0')"),
    "NL": ("[1-9]\\d{3}[A-Z]{2}", "{z}[1:4] || ' ' || {z}[5:]"),
    "AU": ("\\d{3,4}", "lpad({z}, 4, '0')"),
    "CH": ("[1-9]\\d{3}", "{z}"),
    "DK": ("[1-9]\\d{3}", "{z}"),
    "JP": ("\\d{7}", "{z}[1:3] || '-' || {z}[4:]"),
    "BR": ("\\d{8}", "{z}[1:5] || '-' || {z}[6:]"),
}


def region_sql(mapping: spec.ColumnMapping, default: str | None) -> str:
    """The row's ISO region: the `region_from` column read as a country (any spelling
    pycountry knows), else the default."""
    fallback = literal(default) if default else "NULL"
    if not mapping.region_from:
        return fallback
    return f"coalesce({country_sql(quote_ident(mapping.region_from))}, {fallback})"


def _postal_code(v: str, mapping: spec.ColumnMapping, let: Let) -> str:
    """The country's own shape, spaced and padded as the post writes it; a country without
    rules keeps the upper-case value; a code that does not fit its country is invalid."""
    if mapping.tag == "postal_code" and mapping.region_from is None and \
            mapping.default_region is None:
        return f"regexp_replace(upper({v}), '\\s+', ' ', 'g')"
    r = region_sql(mapping, mapping.default_region)
    if mapping.region_from:  # a UDF per row: compute it once
        r = let("r", r)
    z = let("z", f"regexp_replace(upper({v}), '[\\s-]+', '', 'g')")
    cases = " ".join(
        f"WHEN {r} = {literal(country)} THEN CASE WHEN regexp_full_match({z}, {literal(pattern)}) "
        f"THEN {shape.format(z=z)} END" for country, (pattern, shape) in POSTAL_CODES.items())
    return f"CASE {cases} ELSE regexp_replace(upper({v}), '\\s+', ' ', 'g') END"


COUNTRY_ALIASES = {"UK": "GB", "GREAT BRITAIN": "GB", "ENGLAND": "GB", "SCOTLAND": "GB",
                   "WALES": "GB", "USA": "US", "U.S.A.": "US", "U.S.": "US", "AMERICA": "US",
                   "HOLLAND": "NL", "RUSSIA": "RU", "SOUTH KOREA": "KR", "KOREA": "KR",
                   "VIETNAM": "VN", "IRAN": "IR", "BOLIVIA": "BO", "VENEZUELA": "VE",
                   "TANZANIA": "TZ", "SYRIA": "SY", "LAOS": "LA", "MOLDOVA": "MD",
                   "CZECH REPUBLIC": "CZ", "IVORY COAST": "CI", "TURKEY": "TR"}


def country(value: str, _: str = "") -> str | None:
    """ISO 3166 alpha-2 of a code (alpha-2 or -3, numeric) or an English name pycountry knows,
    or a common alias (`UK`, `USA`); None if none."""
    text = " ".join(value.split()).upper()
    if text in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[text]
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        return None


ALPHA_2 = tuple(sorted(c.alpha_2 for c in pycountry.countries))


def country_sql(v: str) -> str:
    """`country(v)` in SQL: a value that is already an alpha-2 code is its own answer (the
    usual country column), so only the others reach the UDF, whose calls cost most."""
    return (f"CASE WHEN {v} IN ({', '.join(literal(c) for c in ALPHA_2)}) THEN {v} "
            f"ELSE {COUNTRY_UDF}({v}, '') END")


GENDERS = {"F": ("f", "female", "woman", "w", "femme", "mujer", "weiblich", "feminin",
                 "féminin"),
           "M": ("m", "male", "man", "homme", "hombre", "männlich", "masculin"),
           "X": ("x", "non-binary", "nonbinary", "non binary", "nb", "other", "diverse", "d"),
           "U": ("u", "unknown", "prefer not to say", "not stated", "undisclosed")}


def _gender(v: str, _: spec.ColumnMapping, let: Let) -> str:
    g = let("g", f"regexp_replace(lower({v}), '\\s+', ' ', 'g')")
    cases = " ".join(f"WHEN {g} IN ({', '.join(literal(w) for w in words)}) THEN "
                     f"{literal(code)}" for code, words in GENDERS.items())
    return f"CASE {cases} END"


def _birthdate(v: str, mapping: spec.ColumnMapping, let: Let) -> str:
    """A date that is a possible birth date: not in the future, not before 1900."""
    b = let("b", _temporal("date")(v, mapping, let))
    return f"CASE WHEN {b} BETWEEN DATE '1900-01-01' AND current_date THEN {b} END"


# What each strptime directive can read, loosely (a superset: spaces, a sign, any number of
# digits), so that a value not matching a format's shape is known not to parse with it.
_DIRECTIVE_SHAPES = {"Y": "\\s*[+-]?\\d+", "b": "\\s*[A-Za-z]+", "B": "\\s*[A-Za-z]+",
                     "a": "\\s*[A-Za-z]+", "A": "\\s*[A-Za-z]+", "p": "\\s*[A-Za-z.]+",
                     "%": "%"}
_NUMERIC = "mdyHIMSjfUWwuGVg"


def format_shape(fmt: str) -> str | None:
    """A regex every value that `strptime(value, fmt)` reads matches (None: no cheap shape)."""
    parts, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%":
            directive = fmt[i + 1:i + 2]
            if directive in _NUMERIC:
                parts.append("\\s*[+-]?\\d+")
            elif directive in _DIRECTIVE_SHAPES:
                parts.append(_DIRECTIVE_SHAPES[directive])
            else:  # %z, %Z, %-d, locale forms ...: no shape, always tried
                return None
            i += 2
        elif fmt[i].isspace():
            parts.append("\\s*")
            i += 1
        else:
            parts.append(re.escape(fmt[i]))
            i += 1
    return "".join(parts)


def _try_format(v: str, fmt: str) -> str:
    """Parse with one format, only the values of the format's shape (one cheap regex instead of
    a failed strptime, for every value of another shape)."""
    parse = f"try_strptime({v}, {literal(fmt)})"
    shape = format_shape(fmt)
    return parse if shape is None else \
        f"CASE WHEN regexp_full_match({v}, {literal(shape)}) THEN {parse} END"


def day_first(mapping: spec.ColumnMapping) -> spec.ColumnMapping:
    """The column read with the default formats turned day-first (`%d/%m/%Y`)."""
    formats = DEFAULT_DATETIME_FORMATS if mapping.tag == "datetime" else DEFAULT_DATE_FORMATS
    return mapping.model_copy(update={"formats": [
        f.replace("%m/%d/%Y", "%d/%m/%Y") for f in formats]})


def _temporal(kind: str) -> Callable[[str, spec.ColumnMapping, Let], str]:
    def build(v: str, mapping: spec.ColumnMapping, _let: Let) -> str:
        sql_type = "TIMESTAMP" if kind == "datetime" else "DATE"
        formats = mapping.formats or (DEFAULT_DATE_FORMATS if kind == "date"
                                      else DEFAULT_DATETIME_FORMATS)
        tries = [_try_format(v, f) for f in formats]
        if not mapping.formats or formats[0] == "%Y-%m-%d":  # ISO first, DuckDB's fast cast
            fast = f"TRY_CAST({v} AS {sql_type})"
            tries.insert(0, f"CASE WHEN {might_cast_to_date(v)} THEN {fast} END"
                         if sql_type == "DATE" else fast)
        return f"CAST(coalesce({', '.join(tries)}) AS {sql_type})"
    return build


# What DuckDB's date cast can read, widened: blanks, a sign, the year's digits, a separator
# (`-`, `/`, blank or backslash), one or two digits, a separator, one or two digits, then
# anything but a digit; or its special words. A test holds it to the cast on fuzzed values.
_CASTABLE_DATE = "^[ \\t\\n\\v\\f\\r]*-?\\d+[-/ \\\\]\\d\\d?[-/ \\\\]\\d\\d?(\\D|$)"


def might_cast_to_date(v: str) -> str:
    """True for every value DuckDB's `TRY_CAST(… AS DATE)` reads, and for few others: a failing
    cast costs several times a working one (it builds its error), so most values a file writes
    in another shape (`03/02/1975`, `02.03.1975`, `19750302`) skip it. An ISO value is let
    through by its fifth character alone."""
    return (f"({v}[5] IN ('-', '/', ' ', '\\') OR regexp_matches({v}, '{_CASTABLE_DATE}') "
            f"OR contains(lower({v}), 'infinity') OR contains(lower({v}), 'epoch'))")


def _decimal(v: str, _: spec.ColumnMapping, _let: Let) -> str:
    """The value cast as written, else with everything but digits, sign, point and exponent
    removed. A value holding `$` or `,` is never a number as written (DuckDB's cast takes
    neither), so it skips the failing cast, which costs more than the cast that works; it is
    cast with those two removed by `replace()` first (`$1,234.50`), and only if that fails with
    the regex. Both give the same number whenever the first one reads one: what the cast reads
    is digits, sign, point and exponent, plus what it ignores either way (blanks, `_`)."""
    stripped = f"TRY_CAST(regexp_replace({v}, '[^0-9.eE+-]', '', 'g') AS DECIMAL(18,4))"
    plain = f"TRY_CAST(replace(replace({v}, '$', ''), ',', '') AS DECIMAL(18,4))"
    return (f"CASE WHEN contains({v}, '$') OR contains({v}, ',') THEN coalesce({plain}, "
            f"{stripped}) ELSE coalesce(TRY_CAST({v} AS DECIMAL(18,4)), {stripped}) END")


def _boolean(v: str, _: spec.ColumnMapping, _let: Let) -> str:
    return (f"CASE WHEN lower({v}) IN ('true','t','yes','y','1') THEN TRUE "
            f"WHEN lower({v}) IN ('false','f','no','n','0') THEN FALSE END")


STATE_UDF = "stagecoach_state"
STATE_REGIONS = ("US", "CA", "AU")  # tried in this order when a row has no country
STATE_ALIASES = {  # spellings people use that are not the ISO name or code
    "US": {"D.C.": "DC", "WASHINGTON DC": "DC", "WASHINGTON D.C.": "DC",
           "WASHINGTON, D.C.": "DC", "WASHINGTON, DC": "DC", "PUERTO RICO": "PR",
           "US VIRGIN ISLANDS": "VI", "U.S. VIRGIN ISLANDS": "VI"},
    "CA": {"PQ": "QC", "QUE": "QC", "QUE.": "QC", "NF": "NL", "NFLD": "NL",
           "NEWFOUNDLAND": "NL", "LABRADOR": "NL", "PEI": "PE", "P.E.I.": "PE",
           "YUKON TERRITORY": "YT", "YK": "YT", "NWT": "NT", "N.W.T.": "NT"},
    "AU": {"TASSIE": "TAS", "JERVIS BAY TERRITORY": "ACT"},
}


def _plain(text: str) -> str:
    """Upper case, accents off, whitespace collapsed: `Québec ` → `QUEBEC`."""
    text = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).split()).upper()


def _state_table() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for region in STATE_REGIONS:
        known: dict[str, str] = {}
        for sub in pycountry.subdivisions.get(country_code=region) or []:
            short = sub.code.split("-", 1)[1]
            known[short] = known[sub.code] = known[_plain(sub.name)] = sub.code
        for alias, short in STATE_ALIASES.get(region, {}).items():
            known[alias] = f"{region}-{short}"
        table[region] = known
    return table


_STATES = _state_table()


def state(value: str, region: str) -> str | None:
    """ISO 3166-2 of a state, province or territory of the US, Canada or Australia, from its
    code (`CA`, `US-CA`), name (`California`, `Québec`) or a common variant (`PQ`, `D.C.`);
    in the row's country (`region`), else the first of US, CA, AU that knows it. None if
    none, or if the country is not one of the three."""
    text = _plain(value)
    if region and region != "ZZ":
        return _STATES[region].get(text) if region in _STATES else None
    for known in _STATES.values():
        if text in known:
            return known[text]
    return None


def _state(v: str, mapping: spec.ColumnMapping, _let: Let) -> str:
    region = region_sql(mapping, mapping.default_region)
    return f"{STATE_UDF}({v}, coalesce({region}, 'ZZ'))"


NAME = Tag(_name, example=("ANNE-SOPHIE O'BRIEN", "Anne-Sophie O'Brien"))
TAGS: dict[str, Tag] = {
    "text": Tag(_same, example=("  a b ", "a b")),
    "id": Tag(_same, example=(" C-001 ", "C-001")),
    "email": Tag(_email, options=("lowercase_local",),
                 example=(" Ann@Example.COM ", "ann@example.com")),
    "phone": Tag(_phone, options=("default_region", "region_from", "default_country_code"),
                 example=("01 42 68 53 00 (FR)", "+33142685300")),
    "given_name": NAME,
    "surname": Tag(_name, example=("DE LA CRUZ", "de la Cruz")),
    "full_name": Tag(_name, example=("JAN VAN DER BERG", "Jan van der Berg")),
    "name": NAME,
    "postal_code": Tag(_postal_code, options=("default_region", "region_from"),
                       example=("sw1a1aa (GB)", "SW1A 1AA")),
    "gender": Tag(_gender, example=("Female", "F")),
    "birthdate": Tag(_birthdate, "DATE", ("formats",), ("02/03/1975", "1975-02-03")),
    "date": Tag(_temporal("date"), "DATE", ("formats",), ("07.03.1984", "1984-03-07")),
    "datetime": Tag(_temporal("datetime"), "TIMESTAMP", ("formats",),
                    ("2026-11-01T13:45:00", "2026-11-01 13:45:00")),
    "integer": Tag(lambda v, _, __: f"TRY_CAST(replace({v}, ',', '') AS BIGINT)", "BIGINT",
                   example=("1,204", "1204")),
    "decimal": Tag(_decimal, "DECIMAL(18,4)", example=("$1,234.50", "1234.5000")),
    "boolean": Tag(_boolean, "BOOLEAN", example=("Yes", "true")),
    "country": Tag(lambda v, _, __: country_sql(v), example=("France", "FR")),
    "state": Tag(_state, options=("default_region", "region_from"),
                 example=("Québec (CA)", "CA-QC")),
    "upper": Tag(lambda v, _, __: f"upper({v})", example=("ab", "AB")),
    "lower": Tag(lambda v, _, __: f"lower({v})", example=("AB", "ab")),
}
TAG_TYPES = {name: tag.result for name, tag in TAGS.items() if tag.result != "VARCHAR"}


def standardise_value(v: str, mapping: spec.ColumnMapping, let: Let = inline) -> str:
    """The standard form of a cleaned value `v` (a column reference); `let` names the values
    the tag uses more than once (`Staged` in a load, written in place by default)."""
    if mapping.tag not in TAGS:
        raise ValueError(f"unknown semantic tag {mapping.tag!r}")
    tag = TAGS[mapping.tag]
    if tag.sql is _same:
        return v
    # An empty value is NULL whatever the tag: said first, so no branch (and no Python UDF,
    # whose calls cost most) sees the rows of a column that is often blank.
    return f"CASE WHEN {v} IS NOT NULL THEN {tag.sql(v, mapping, let)} END"
