"""Golden tables: each semantic tag's exact output for real-world values, loaded through the
real workflow (DuckDB reads and standardises) into the warehouse, on DuckDB and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from resources.warehouse import WarehouseResource
from tests.conftest import WorkflowRun

SPEC = """\
workflow: {{name: golden}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  values: {{from: inbox, path: values.csv}}
domain_tables:
  golden:
    from: values
    max_shrink: 100%
    columns:
      id: {{tag: id}}
{columns}
"""

NAMES = [  # (raw, expected for given_name, surname and full_name alike)
    ("Anne-Sophie", "Anne-Sophie"), ("ANNE-SOPHIE", "Anne-Sophie"),
    ("anne-sophie", "Anne-Sophie"), ("O'Brien", "O'Brien"), ("O'BRIEN", "O'Brien"),
    ("o'brien", "O'Brien"), ("McDonald", "McDonald"), ("MCDONALD", "McDonald"),
    ("mcdonald", "McDonald"), ("MCCARTHY", "McCarthy"), ("MACDONALD", "MacDonald"),
    ("MACKENZIE", "MacKenzie"), ("MACK", "Mack"), ("MACEY", "Macey"),
    ("MACHADO", "Machado"), ("van der Berg", "van der Berg"),
    ("VAN DER BERG", "van der Berg"), ("JAN VAN DER BERG", "Jan van der Berg"),
    ("Van Der Berg", "Van Der Berg"), ("DE LA CRUZ", "de la Cruz"),
    ("de la cruz", "de la Cruz"), ("MARIA DE LA CRUZ", "Maria de la Cruz"),
    ("李小龙", "李小龙"), ("josé", "José"), ("JOSÉ", "José"), ("José", "José"),
    ("ÉLODIE", "Élodie"), ("  mary   ann ", "Mary Ann"), ("mary ann SMITH", "mary ann SMITH"),
    ("jOHN", "jOHN"), ("DiCaprio", "DiCaprio"), ("LeBlanc", "LeBlanc"),
    ("D'ANGELO", "D'Angelo"), ("CHARLES D'ARTAGNAN", "Charles d'Artagnan"),
    ("O\u2019NEILL", "O\u2019Neill"), ("JEAN-PAUL", "Jean-Paul"),
    ("jean-paul sartre", "Jean-Paul Sartre"), ("SMITH-JONES", "Smith-Jones"),
    ("VON TRAPP", "von Trapp"), ("LUDWIG VAN BEETHOVEN", "Ludwig van Beethoven"),
    ("DA SILVA", "da Silva"), ("DOS SANTOS", "dos Santos"), ("JAN DE", "Jan De"),
    ("Δημήτρης", "Δημήτρης"), ("ИВАН", "Иван"), ("иван петров", "Иван Петров"),
    ("Мария", "Мария"), ("محمد", "محمد"), ("さくら", "さくら"), ("김민준", "김민준"),
    ("ØRJAN", "Ørjan"), ("søren", "Søren"), ("MÜLLER", "Müller"),
    ("müller-lüdenscheidt", "Müller-Lüdenscheidt"), ("  Anne  Sophie ", "Anne Sophie"),
    ("ANNE\tSOPHIE", "Anne Sophie"), ("x", "X"), ("A", "A"),
    ("o'connor-mcbride", "O'Connor-McBride"), ("de Gaulle", "de Gaulle"),
    ("CHARLES DE GAULLE", "Charles de Gaulle"), ("", None),
]


def load_golden(root: Path, url: str | None, runner: Callable[..., WorkflowRun],
                columns: dict[str, str], rows: list[dict[str, str]]) -> list[tuple]:
    """Load `rows` (source columns → raw text) through a feed whose `columns` map domain
    columns to their YAML; return the table ordered by id."""
    workflows = root / "workflows"
    (workflows / "inbox").mkdir(parents=True, exist_ok=True)
    (workflows / "golden.yaml").write_text(SPEC.format(
        columns="\n".join(f"      {c}: {yaml}" for c, yaml in columns.items())))
    text = io.StringIO()
    sources = sorted({k for r in rows for k in r})
    writer = csv.DictWriter(text, ["id", *sources], lineterminator="\n")
    writer.writeheader()
    for i, row in enumerate(rows):
        writer.writerow({"id": f"{i:06d}", **row})
    (workflows / "inbox" / "values.csv").write_text(text.getvalue())
    run = runner(workflows, "golden")
    assert run.success, run.failures()
    warehouse = WarehouseResource(url=url or f"duckdb:///{root / 'data' / 'warehouse.duckdb'}")
    names = ", ".join(f'"{c}"' for c in columns)
    return [r[1:] for r in sorted(warehouse.fetch(f'SELECT id, {names} FROM "domain"."golden"'))]


def test_names(warehouse_url: str | None, stagecoach_env: Path,
               workflow_runner: Callable[..., WorkflowRun]) -> None:
    assert len(NAMES) >= 50
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"g": "{source: raw, tag: given_name}", "s": "{source: raw, tag: surname}",
                       "f": "{source: raw, tag: full_name}"},
                      [{"raw": raw} for raw, _ in NAMES])
    wrong = [(raw, expected, row) for (raw, expected), row in zip(NAMES, got, strict=True)
             if row != (expected, expected, expected)]
    assert not wrong, wrong


@pytest.mark.parametrize("written", ["Anne-Sophie", "O'Brien", "McDonald", "van der Berg",
                                     "de la Cruz", "DiCaprio", "d'Artagnan", "MacKenzie"])
def test_a_name_written_in_mixed_case_is_never_changed(written: str) -> None:
    import duckdb

    from assets.feeds import standardise
    from assets.spec import ColumnMapping

    expr = standardise("v", ColumnMapping(tag="full_name"))
    with duckdb.connect() as con:
        assert con.execute(f'SELECT {expr} FROM (SELECT $v AS "v")', {"v": written}
                           ).fetchone()[0] == written


PHONES = [  # (raw, default_region, expected E.164 or None)
    ("(212) 555-0134", "US", "+12125550134"),
    ("(201) 555-0123", "US", "+12015550123"), ("201.555.0123", "US", "+12015550123"),
    ("+1 201 555 0123", "US", "+12015550123"), ("1-201-555-0123", "US", "+12015550123"),
    ("2015550123", "US", "+12015550123"), ("555-0123", "US", None),
    ("(416) 555-0199", "CA", "+14165550199"), ("+1 416 234 5678", "CA", "+14162345678"),
    ("01 42 68 53 00", "FR", "+33142685300"), ("06 12 34 56 78", "FR", "+33612345678"),
    ("+33 6 12 34 56 78", "FR", "+33612345678"), ("0033 6 12 34 56 78", "FR", "+33612345678"),
    ("0033 1 42 68 53 00", "US", "+33142685300"),  # 00 written for + from anywhere
    ("06 12 34 56", "FR", None),
    ("06 12 34 56 78", "IT", "+390612345678"),  # Rome: Italy keeps the leading 0
    ("02 1234 5678", "IT", "+390212345678"),
    ("+39 02 1234 5678", "IT", "+390212345678"), ("312 345 6789", "IT", "+393123456789"),
    ("06 6982", "IT", "+39066982"), ("06 698", "IT", None),
    ("020 7946 0958", "GB", "+442079460958"), ("+44 20 7946 0958", "GB", "+442079460958"),
    ("07700 900123", "GB", None),  # Ofcom's range for drama: not a real number
    ("07911 123456", "GB", "+447911123456"), ("0044 7911 123456", "GB", "+447911123456"),
    ("030 123456", "DE", "+4930123456"), ("+49 30 1234567", "DE", "+49301234567"),
    ("0151 23456789", "DE", "+4915123456789"), ("+49 (0)30 1234567", "DE", "+49301234567"),
    ("020 123 4567", "NL", "+31201234567"), ("06 12345678", "NL", "+31612345678"),
    ("044 668 18 00", "CH", "+41446681800"), ("+41 78 123 45 67", "CH", "+41781234567"),
    ("32 12 34 56", "DK", "+4532123456"), ("+45 20 12 34 56", "DK", "+4520123456"),
    ("(02) 9876 5432", "AU", "+61298765432"), ("0412 345 678", "AU", "+61412345678"),
    ("03-1234-5678", "JP", "+81312345678"), ("090-1234-5678", "JP", "+819012345678"),
    ("(11) 91234-5678", "BR", "+5511912345678"), ("+55 21 2345-6789", "BR", "+552123456789"),
    ("91 123 45 67", "ES", "+34911234567"), ("612 34 56 78", "ES", "+34612345678"),
    ("+86 138 0013 8000", "CN", "+8613800138000"), ("010 1234 5678", "CN", "+861012345678"),
    ("098765 43210", "IN", "+919876543210"), ("+91 98765 43210", "IN", "+919876543210"),
    ("02-312-3456", "KR", "+8223123456"), ("010-1234-5678", "KR", "+821012345678"),
    ("+7 912 345-67-89", "RU", "+79123456789"), ("8 (912) 345-67-89", "RU", "+79123456789"),
    ("call me", "US", None), ("n/a", "FR", None), ("+", "FR", None), ("", "FR", None),
    ("+33 1 42 68 53 00", None, "+33142685300"), ("01 42 68 53 00", None, None),
    ("  +44 20 7946 0958  ", "FR", "+442079460958"),
]


def test_phones(warehouse_url: str | None, stagecoach_env: Path,
                workflow_runner: Callable[..., WorkflowRun]) -> None:
    assert len(PHONES) >= 50
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"country": "{tag: text}",
                       "phone": "{tag: phone, region_from: country}"},
                      [{"phone": raw, "country": region or ""} for raw, region, _ in PHONES])
    wrong = [(raw, region, expected, row[1])
             for (raw, region, expected), row in zip(PHONES, got, strict=True)
             if row[1] != expected]
    assert not wrong, wrong


@functools.cache
def typed_numbers() -> tuple[list[str], list[str], list[str | None]]:
    """100,000 numbers of 24 regions, real shapes with random digits (so some are invalid),
    written as people type them: (raw text, region, phonenumbers' own E.164 or None)."""
    import random

    import phonenumbers

    regions = ["US", "CA", "GB", "FR", "DE", "IT", "ES", "NL", "BE", "CH", "AT", "DK", "SE",
               "NO", "PL", "PT", "IE", "AU", "NZ", "JP", "BR", "MX", "IN", "ZA"]
    fmt = phonenumbers.PhoneNumberFormat
    kinds = [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]
    rng = random.Random(16)
    raws: list[str] = []
    countries: list[str] = []
    expected: list[str | None] = []
    while len(raws) < 100_000:
        region = rng.choice(regions)
        example = phonenumbers.example_number_for_type(region, rng.choice(kinds))
        digits = str(example.national_number)
        keep = rng.randint(1, max(1, len(digits) - 2))
        national = digits[:keep] + "".join(rng.choice("0123456789")
                                           for _ in range(len(digits) - keep))
        number = phonenumbers.PhoneNumber(country_code=example.country_code,
                                          national_number=int(national),
                                          italian_leading_zero=example.italian_leading_zero)
        text = phonenumbers.format_number(number, rng.choice(
            [fmt.E164, fmt.INTERNATIONAL, fmt.NATIONAL, fmt.NATIONAL]))
        style = rng.randint(0, 4)
        if style == 1:
            text = text.replace(" ", ".")
        elif style == 2:
            text = text.replace(" ", "").replace("-", "")
        elif style == 3:
            text = f"  {text.replace(' ', '-')} "
        try:
            parsed = phonenumbers.parse(text, region)
            answer = phonenumbers.format_number(parsed, fmt.E164) \
                if phonenumbers.is_valid_number(parsed) else None
        except phonenumbers.NumberParseException:
            answer = None
        raws.append(text)
        countries.append(region)
        expected.append(answer)
    return raws, countries, expected


def phones_in_sql(raws: list[str], countries: list[str], mapping: object = None,
                  bound: bool = False) -> list[str | None]:
    """The phone tag of each raw value, its row's country as the region (or `mapping`), over an
    Arrow table in DuckDB: as a load computes it (named values in projections below), or with
    `bound` as one expression (named values written in place, North America's in SQL and the
    rest by phonenumbers)."""
    import duckdb
    import pyarrow as pa

    from assets.feeds import clean, with_lets
    from assets.semantic_tags import Staged, register, standardise_value
    from assets.spec import ColumnMapping

    mapping = mapping or ColumnMapping(tag="phone", region_from="country")
    assert isinstance(mapping, ColumnMapping)
    staged = Staged("_let_")
    expr = standardise_value(clean("raw value"), mapping, *([] if bound else [staged]))
    source = "typed" if bound else with_lets("typed", [staged.lets])
    with duckdb.connect() as con:
        register(con)
        con.register("typed", pa.table({"raw value": raws, "country": countries,
                                        "n": range(len(raws))}))
        return [r[0] for r in con.execute(f"SELECT {expr} FROM {source} ORDER BY n").fetchall()]


def test_phones_agree_with_phonenumbers_on_100000_typed_numbers() -> None:
    """The tag gives exactly phonenumbers' answer, as a load computes it and (on a slice) as
    one expression."""
    raws, countries, expected = typed_numbers()
    got = phones_in_sql(raws, countries)
    agree = sum(g == e for g, e in zip(got, expected, strict=True))
    valid = sum(e is not None for e in expected)
    print(f"phone agreement: {agree:,}/{len(raws):,} ({agree / len(raws):.4%}); "
          f"{valid:,} valid by phonenumbers")
    assert valid > 20_000 and len(raws) - valid > 5_000  # both answers well represented
    assert agree == len(raws), [(r, g, e) for r, g, e in zip(raws, got, expected, strict=True)
                                if g != e][:10]
    assert phones_in_sql(raws[:3000], countries[:3000], bound=True) == expected[:3000]


def test_phones_agree_with_phonenumbers_through_a_load(
        warehouse_url: str | None, stagecoach_env: Path,
        workflow_runner: Callable[..., WorkflowRun]) -> None:
    """The same 100,000 numbers loaded through the real workflow (the load's form of the tag,
    named values computed in projections) into DuckDB and PostgreSQL."""
    raws, countries, expected = typed_numbers()
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"country": "{tag: text}",
                       "phone": "{tag: phone, region_from: country}"},
                      [{"phone": r, "country": c} for r, c in zip(raws, countries, strict=True)])
    wrong = [(r, row[1], e) for r, row, e in zip(raws, got, expected, strict=True)
             if row[1] != e]
    assert not wrong, wrong[:10]


EMAILS = [  # (raw, expected with lowercase_local: true)
    ("  John.Smith@Example.COM ", "john.smith@example.com"),
    ("ann@example.com", "ann@example.com"), ("ann+news@example.com", "ann+news@example.com"),
    ("Ann+News@Example.com", "ann+news@example.com"),
    ("a.b.c@example.co.uk", "a.b.c@example.co.uk"),
    ("first_last@sub.example.org", "first_last@sub.example.org"),
    ("o'brien@example.ie", "o'brien@example.ie"), ("x@example.museum", "x@example.museum"),
    ("x@bücher.de", "x@bücher.de"), ("x@BÜCHER.DE", "x@bücher.de"),
    ("x@xn--bcher-kva.de", "x@bücher.de"), ("用户@例子.广告", "用户@例子.广告"),
    ("josé@example.com", "josé@example.com"), ("JOSÉ@EXAMPLE.COM", "josé@example.com"),
    ("a@b.co", "a@b.co"), ("a@b.c", "a@b.c"), ("1234@example.com", "1234@example.com"),
    ("a-b@ex-ample.com", "a-b@ex-ample.com"), ("a%b@example.com", "a%b@example.com"),
    ("a@example.com.", None), ("a.@example.com", None), (".a@example.com", None),
    ("a..b@example.com", None), ("a@example..com", None), ("a@-example.com", None),
    ("a@example-.com", None), ("a@ex--ample.com", None), ("a@example", None),
    ("a@localhost", None), ("a@x.test", None), ("a@x.local", None), ("a@x.invalid", None),
    ("a@x.onion", None), ("a@1.2.3.4", None), ("a@[1.2.3.4]", None),
    ("john at example.com", None), ("n/a", None), ("not-an-email", None), ("@example.com", None),
    ("a@", None), ("a@@example.com", None), ("a b@example.com", None),
    ('"a b"@example.com', None), ("a@exam ple.com", None),
    ("a@example.c0m", "a@example.c0m"),  # email-validator accepts a TLD with a digit
    ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    ("a@" + "b" * 64 + ".com", None), ("a@" + "b" * 63 + ".com", "a@" + "b" * 63 + ".com"),
    ("mailto:a@example.com", None), ("<a@example.com>", None),
    ("a@example.com;b@example.com", None),
    ("", None),
]


def test_emails(warehouse_url: str | None, stagecoach_env: Path,
                workflow_runner: Callable[..., WorkflowRun]) -> None:
    assert len(EMAILS) >= 50
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"email": "{tag: email}",
                       "as_written": "{source: email, tag: email, lowercase_local: false}"},
                      [{"email": raw} for raw, _ in EMAILS])
    wrong = [(raw, expected, row[0]) for (raw, expected), row in zip(EMAILS, got, strict=True)
             if row[0] != expected]
    assert not wrong, wrong
    as_written = dict(zip((raw for raw, _ in EMAILS), (row[1] for row in got), strict=True))
    assert as_written["  John.Smith@Example.COM "] == "John.Smith@example.com"
    assert as_written["JOSÉ@EXAMPLE.COM"] == "JOSÉ@example.com"


def test_emails_agree_with_email_validator() -> None:
    """The SQL fast path for plain addresses and the email-validator path give exactly
    email-validator's answer on 20,000 generated addresses, plain and odd."""
    import random

    import duckdb
    import pyarrow as pa

    from assets.feeds import standardise
    from assets.semantic_tags import email, register
    from assets.spec import ColumnMapping

    rng = random.Random(6)
    pieces = ["a", "B", "z9", ".", "..", "-", "_", "+", "%", "'", "é", "É", "ß", "ÿ", "Ö", "\u00d7",
              "e\u0301", " ", "--", "x" * 30, "ä" * 20]
    domains = ["example.com", "Example.CO.UK", "ex-ample.org", "-x.com", "x-.com", "bücher.de",
               "x.test", "x.c", "x.c0m", "a..b.com", "localhost", "x.museum", "xn--bcher-kva.de",
               "a" * 64 + ".com", "sub.x.io."]
    raws = []
    for _ in range(20_000):
        local = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))
        raws.append(f"{local}{rng.choice(['@', '@', '@', '@@', ''])}{rng.choice(domains)}")
    expected = [email(r, "t") for r in raws]
    expr = standardise("raw value", ColumnMapping(tag="email"))
    with duckdb.connect() as con:
        register(con)
        con.register("typed", pa.table({"raw value": raws, "n": range(len(raws))}))
        got = [r[0] for r in con.execute(f"SELECT {expr} FROM typed ORDER BY n").fetchall()]
    wrong = [(r, g, e) for r, g, e in zip(raws, got, expected, strict=True)
             if g != e and r.strip() == r]  # the tag trims first; the reference does not
    assert sum(e is not None for e in expected) > 3_000
    assert not wrong, wrong[:10]


@pytest.mark.parametrize(("values", "expected"), [
    (["13/02/1975", "02/03/1975", "1980-01-31"],  # one value only day-first can read
     [dt.date(1975, 2, 13), dt.date(1975, 3, 2), dt.date(1980, 1, 31)]),
    (["02/13/1975", "02/03/1975"], [dt.date(1975, 2, 13), dt.date(1975, 2, 3)]),
    (["02/03/1975", "07.03.1984"], [dt.date(1975, 2, 3), dt.date(1984, 3, 7)]),  # default
])
def test_a_file_of_day_first_dates_is_read_day_first(
        values: list[str], expected: list[dt.date], warehouse_url: str | None,
        stagecoach_env: Path, workflow_runner: Callable[..., WorkflowRun]) -> None:
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner, {"born": "{tag: date}"},
                      [{"born": v} for v in values])
    assert [r[0] for r in got] == expected


def test_a_file_with_both_date_orders_is_reported(
        stagecoach_env: Path, workflow_runner: Callable[..., WorkflowRun]) -> None:
    with pytest.raises(AssertionError) as failed:
        load_golden(stagecoach_env, None, workflow_runner, {"born": "{tag: date}"},
                    [{"born": "13/02/1975"}, {"born": "02/13/1975"}])
    src = stagecoach_env / "workflows" / "inbox" / "values.csv"
    assert (f"domain table `golden`: {src}: column `born` holds dates only day-first can read "
            "(13/02/1975) and dates only month-first can read (02/13/1975). Set `formats:` on "
            'the column (e.g. ["%d/%m/%Y"]) or fix the file; nothing was loaded; '
            "domain.golden is unchanged.") in str(failed.value)


POSTAL_CODES = [  # (raw, country as written in the row, expected)
    ("2134", "US", "02134"), (" 10001 ", "USA", "10001"), ("021341234", "us", "02134-1234"),
    ("02134-1234", "United States", "02134-1234"), ("02134 1234", "US", "02134-1234"),
    ("1234567", "US", None), ("ABCDE", "US", None),
    ("k1a0b1", "CA", "K1A 0B1"), ("K1A 0B1", "Canada", "K1A 0B1"), ("m5v-3l9", "CA", "M5V 3L9"),
    ("D1A 0B1", "CA", None), ("12345", "CA", None),
    ("sw1a1aa", "GB", "SW1A 1AA"), ("SW1A 1AA", "UK", "SW1A 1AA"), ("ec1a 1bb", "GB", "EC1A 1BB"),
    ("m1 1ae", "United Kingdom", "M1 1AE"), ("b33 8th", "GB", "B33 8TH"),
    ("cr2 6xh", "GB", "CR2 6XH"), ("DN55 1PT", "GB", "DN55 1PT"), ("12345", "GB", None),
    ("75008", "FR", "75008"), ("1000", "France", "01000"), ("750 08", "FR", "75008"),
    ("7500", "FR", "07500"), ("750", "FR", None), ("75A08", "FR", None),
    ("10115", "DE", "10115"), ("1067", "Germany", "01067"), ("D-10115", "DE", None),
    ("1012ab", "NL", "1012 AB"), ("1012 AB", "Netherlands", "1012 AB"),
    ("0123 AB", "NL", None), ("1012", "NL", None),
    ("2000", "AU", "2000"), ("800", "Australia", "0800"), ("20000", "AU", None),
    ("8001", "CH", "8001"), ("3000", "Switzerland", "3000"), ("0800", "CH", None),
    ("80010", "CH", None),
    ("1050", "DK", "1050"), ("2100", "Denmark", "2100"), ("0100", "DK", None),
    ("1000001", "JP", "100-0001"), ("100-0001", "Japan", "100-0001"), ("1000", "JP", None),
    ("01310100", "BR", "01310-100"), ("01310-100", "Brazil", "01310-100"),
    ("0131010", "BR", None),
    ("00-950", "PL", "00-950"), ("eh1 1yz", "", "EH1 1YZ"), ("eh1   1yz", "Atlantis", "EH1 1YZ"),
    ("2134", "", "2134"), ("", "US", None),
]


def test_postal_codes(warehouse_url: str | None, stagecoach_env: Path,
                      workflow_runner: Callable[..., WorkflowRun]) -> None:
    assert len(POSTAL_CODES) >= 50
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"country": "{tag: country}",
                       "zip": "{tag: postal_code, region_from: country}"},
                      [{"zip": raw, "country": c} for raw, c, _ in POSTAL_CODES])
    wrong = [(raw, c, expected, row[1])
             for (raw, c, expected), row in zip(POSTAL_CODES, got, strict=True)
             if row[1] != expected]
    assert not wrong, wrong


OTHERS = [  # (tag, raw, expected)
    ("country", "fr", "FR"), ("country", "France", "FR"), ("country", "FRA", "FR"),
    ("country", " united   kingdom ", "GB"), ("country", "UK", "GB"), ("country", "USA", "US"),
    ("country", "Deutschland", None), ("country", "Germany", "DE"), ("country", "250", "FR"),
    ("country", "Viet Nam", "VN"), ("country", "Vietnam", "VN"), ("country", "Narnia", None),
    ("country", "ch", "CH"), ("country", "Switzerland", "CH"), ("country", "JPN", "JP"),
    ("gender", "F", "F"), ("gender", "female", "F"), ("gender", "Woman", "F"),
    ("gender", "femme", "F"), ("gender", "M", "M"), ("gender", "MALE", "M"),
    ("gender", "homme", "M"), ("gender", "Non-binary", "X"), ("gender", "x", "X"),
    ("gender", "other", "X"), ("gender", "unknown", "U"), ("gender", "Prefer not to say", "U"),
    ("gender", "yes", None), ("gender", "n/a", None),
    ("birthdate", "1975-03-02", "1975-03-02"), ("birthdate", "03/02/1975", "1975-03-02"),
    ("birthdate", "1899-12-31", None), ("birthdate", "1900-01-01", "1900-01-01"),
    ("birthdate", "2999-01-01", None), ("birthdate", "not a date", None),
    ("birthdate", "02.03.1975", "1975-03-02"),
]


def test_country_gender_birthdate(warehouse_url: str | None, stagecoach_env: Path,
                                  workflow_runner: Callable[..., WorkflowRun]) -> None:
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {t: f"{{source: {t}_raw, tag: {t}, optional: true}}"
                       for t in ("country", "gender", "birthdate")},
                      [{f"{t}_raw": raw} for t, raw, _ in OTHERS])
    index = {"country": 0, "gender": 1, "birthdate": 2}
    wrong = [(t, raw, expected, row[index[t]])
             for (t, raw, expected), row in zip(OTHERS, got, strict=True)
             if (str(row[index[t]]) if row[index[t]] is not None else None) != expected]
    assert not wrong, wrong


D = dt.date
MONTH_FIRST = [  # (raw, expected) in a file no value of which only day-first can read
    ("1975-03-02", D(1975, 3, 2)), ("1975-3-2", D(1975, 3, 2)), ("03/02/1975", D(1975, 3, 2)),
    ("3/2/1975", D(1975, 3, 2)), ("12/31/1999", D(1999, 12, 31)), ("02/13/1975", D(1975, 2, 13)),
    ("02/29/2000", D(2000, 2, 29)), ("02/29/1900", None), ("02/30/2001", None),
    ("13/13/2001", None), ("00/10/2001", None), ("02.03.1975", D(1975, 3, 2)),
    ("31.12.1999", D(1999, 12, 31)), ("1.2.1975", D(1975, 2, 1)), ("32.01.1975", None),
    ("1975/03/02", D(1975, 3, 2)), ("1999/12/31", D(1999, 12, 31)), ("19750302", D(1975, 3, 2)),
    ("20000229", D(2000, 2, 29)), ("19751302", None), ("02-Mar-1975", D(1975, 3, 2)),
    ("31-Dec-1999", D(1999, 12, 31)), ("02-MAR-1975", D(1975, 3, 2)),
    ("02-mar-1975", D(1975, 3, 2)), ("02-Foo-1975", None), ("2024-02-29", D(2024, 2, 29)),
    ("2023-02-29", None), ("1900-01-01", D(1900, 1, 1)), ("2099-12-31", D(2099, 12, 31)),
    ("0001-01-01", D(1, 1, 1)), ("1975-03-02 10:30:00", D(1975, 3, 2)),
    ("1975-03-02T10:30:00", D(1975, 3, 2)), ("unknown", None), ("n/a", None), ("-", None),
    ("0", None), ("1975", None), ("1975-03", None), ("03/1975", None), ("03/02/75", D(75, 3, 2)),
    ("March 2, 1975", None), ("2 March 1975", None), ("1975.03.02", None),
    ("03-02-1975", None), ("1975-13-01", None), ("1975-00-10", None), ("1975-01-32", None),
    ("11/11/2011", D(2011, 11, 11)), ("01/01/2000", D(2000, 1, 1)),
    ("07/04/1776", D(1776, 7, 4)), ("", None),
]
DAY_FIRST = [  # (raw, expected) in a file where one value only day-first can read
    ("13/02/1975", D(1975, 2, 13)), ("02/03/1975", D(1975, 3, 2)), ("2/3/1975", D(1975, 3, 2)),
    ("31/12/1999", D(1999, 12, 31)), ("29/02/2000", D(2000, 2, 29)), ("29/02/1900", None),
    ("30/02/2001", None), ("13/1/2001", D(2001, 1, 13)), ("12/11/2010", D(2010, 11, 12)),
    ("11/12/2010", D(2010, 12, 11)), ("01/01/2000", D(2000, 1, 1)), ("10/10/2010", D(2010, 10, 10)),
    ("25/12/1985", D(1985, 12, 25)), ("05/06/1990", D(1990, 6, 5)), ("5/6/1990", D(1990, 6, 5)),
    ("02.03.1975", D(1975, 3, 2)), ("31.12.1999", D(1999, 12, 31)), ("1975-03-02", D(1975, 3, 2)),
    ("1975/03/02", D(1975, 3, 2)), ("19750302", D(1975, 3, 2)), ("02-Mar-1975", D(1975, 3, 2)),
    ("2024-02-29", D(2024, 2, 29)), ("2023-02-29", None), ("unknown", None), ("", None),
    ("1975-03-02 10:30:00", D(1975, 3, 2)), ("00/01/2000", None), ("01/00/2000", None),
    ("32/01/2000", None), ("15/08/1947", D(1947, 8, 15)), ("14/07/1789", D(1789, 7, 14)),
    ("06/01/2021", D(2021, 1, 6)), ("09/11/2001", D(2001, 11, 9)), ("18/06/1815", D(1815, 6, 18)),
    ("03/10/1990", D(1990, 10, 3)), ("17/03/2020", D(2020, 3, 17)), ("01/05/1886", D(1886, 5, 1)),
    ("28/02/2023", D(2023, 2, 28)), ("01/03/2024", D(2024, 3, 1)), ("31/04/2024", None),
    ("30/04/2024", D(2024, 4, 30)), ("1/1/2001", D(2001, 1, 1)), ("21/1/2001", D(2001, 1, 21)),
    ("n/a", None), ("13/13/2013", None), ("1975", None), ("03/1975", None),
    ("02/03/75", D(75, 3, 2)), ("13.02.1975", D(1975, 2, 13)), ("19/11/1999", D(1999, 11, 19)),
    ("12/12/2012", D(2012, 12, 12)),
]


@pytest.mark.parametrize("golden", ["month_first", "day_first"])
def test_dates_in_both_orders(golden: str, warehouse_url: str | None, stagecoach_env: Path,
                              workflow_runner: Callable[..., WorkflowRun]) -> None:
    """The file's order decides `a/b/yyyy`; the other formats read alike in both."""
    cases = MONTH_FIRST if golden == "month_first" else DAY_FIRST
    assert len(cases) >= 50
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"born": "{tag: date}"}, [{"born": raw} for raw, _ in cases])
    wrong = [(raw, expected, row[0]) for (raw, expected), row in zip(cases, got, strict=True)
             if row[0] != expected]
    assert not wrong, wrong


MORE_OTHERS = [  # more real-world spellings, so that each of these tags has 50 cases or more
    ("country", "Canada", "CA"), ("country", "CAN", "CA"), ("country", "ca", "CA"),
    ("country", "United States", "US"), ("country", "united states of america", "US"),
    ("country", "U.S.A.", "US"), ("country", "America", "US"), ("country", "GBR", "GB"),
    ("country", "Great Britain", "GB"), ("country", "England", "GB"), ("country", "Scotland", "GB"),
    ("country", "Netherlands", "NL"), ("country", "Holland", "NL"), ("country", "NLD", "NL"),
    ("country", "Australia", "AU"), ("country", "AUS", "AU"), ("country", "Denmark", "DK"),
    ("country", "Japan", "JP"), ("country", "Brazil", "BR"), ("country", "BRA", "BR"),
    ("country", "Italy", "IT"), ("country", "ITA", "IT"), ("country", "Spain", "ES"),
    ("country", "Russia", "RU"), ("country", "Russian Federation", "RU"),
    ("country", "South Korea", "KR"), ("country", "Korea, Republic of", "KR"),
    ("country", "Czech Republic", "CZ"), ("country", "Czechia", "CZ"),
    ("country", "Ivory Coast", "CI"), ("country", "Côte d'Ivoire", "CI"),
    ("country", "Turkey", "TR"), ("country", "Iran", "IR"), ("country", "840", "US"),
    ("country", "XX", None), ("country", "Europe", None), ("country", "n/a", None),
    ("gender", "f", "F"), ("gender", "FEMALE", "F"), ("gender", "w", "F"), ("gender", "mujer", "F"),
    ("gender", "weiblich", "F"), ("gender", "féminin", "F"), ("gender", "m", "M"),
    ("gender", "Male", "M"), ("gender", "man", "M"), ("gender", "hombre", "M"),
    ("gender", "männlich", "M"), ("gender", "masculin", "M"), ("gender", "nonbinary", "X"),
    ("gender", "non binary", "X"), ("gender", "NB", "X"), ("gender", "diverse", "X"),
    ("gender", "d", "X"), ("gender", "U", "U"), ("gender", "Unknown", "U"),
    ("gender", "not stated", "U"), ("gender", "undisclosed", "U"),
    ("gender", "prefer  not to  say", "U"), ("gender", "0", None), ("gender", "1", None),
    ("gender", "fem", None), ("gender", "males", None), ("gender", "?", None),
    ("gender", "-", None), ("gender", "Mr", None), ("gender", "Mrs", None),
    ("gender", "trans", None), ("gender", "none", None), ("gender", "N", None),
    ("gender", "Y", None), ("gender", "false", None), ("gender", "Frau", None),
    ("birthdate", "1980-01-31", "1980-01-31"), ("birthdate", "01/31/1980", "1980-01-31"),
    ("birthdate", "31.01.1980", "1980-01-31"), ("birthdate", "1980/01/31", "1980-01-31"),
    ("birthdate", "19800131", "1980-01-31"), ("birthdate", "31-Jan-1980", "1980-01-31"),
    ("birthdate", "12/31/1899", None), ("birthdate", "01/01/1900", "1900-01-01"),
    ("birthdate", "1899-01-01", None), ("birthdate", "2000-02-29", "2000-02-29"),
    ("birthdate", "2001-02-29", None), ("birthdate", "1950-06-15", "1950-06-15"),
    ("birthdate", "06/15/1950", "1950-06-15"), ("birthdate", "15.06.1950", "1950-06-15"),
    ("birthdate", "1800-01-01", None), ("birthdate", "0001-01-01", None),
    ("birthdate", "3000-01-01", None), ("birthdate", "2100-12-31", None),
    ("birthdate", "unknown", None), ("birthdate", "n/a", None), ("birthdate", "0", None),
    ("birthdate", "1975", None), ("birthdate", "1975-03", None), ("birthdate", "13/31/1980", None),
    ("birthdate", "1980-01-31 00:00:00", "1980-01-31"), ("birthdate", "1/2/1990", "1990-01-02"),
    ("birthdate", "1990-1-2", "1990-01-02"), ("birthdate", "02-JAN-1990", "1990-01-02"),
    ("birthdate", "2010-10-10", "2010-10-10"), ("birthdate", "10/10/2010", "2010-10-10"),
    ("birthdate", "1999-12-31", "1999-12-31"), ("birthdate", "2000-01-01", "2000-01-01"),
    ("birthdate", "1900-01-02", "1900-01-02"), ("birthdate", "1969-07-20", "1969-07-20"),
    ("birthdate", "07/20/1969", "1969-07-20"), ("birthdate", "20.07.1969", "1969-07-20"),
    ("birthdate", "yesterday", None), ("birthdate", "1980-02-30", None),
    ("birthdate", "1985-05-17", "1985-05-17"), ("birthdate", "05/17/1985", "1985-05-17"),
    ("birthdate", "17.05.1985", "1985-05-17"), ("birthdate", "1985/05/17", "1985-05-17"),
    ("birthdate", "19850517", "1985-05-17"), ("birthdate", "17-May-1985", "1985-05-17"),
    ("birthdate", "1900-01-00", None), ("birthdate", "-1", None),
]
ALL_OTHERS = OTHERS + MORE_OTHERS


def test_fifty_cases_per_tag() -> None:
    for tag in ("country", "gender", "birthdate"):
        assert sum(t == tag for t, _, _ in ALL_OTHERS) >= 50, tag
    assert len(STATES) >= 50


def test_more_country_gender_birthdate(warehouse_url: str | None, stagecoach_env: Path,
                                       workflow_runner: Callable[..., WorkflowRun]) -> None:
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {t: f"{{source: {t}_raw, tag: {t}, optional: true}}"
                       for t in ("country", "gender", "birthdate")},
                      [{f"{t}_raw": raw} for t, raw, _ in MORE_OTHERS])
    index = {"country": 0, "gender": 1, "birthdate": 2}
    wrong = [(t, raw, expected, row[index[t]])
             for (t, raw, expected), row in zip(MORE_OTHERS, got, strict=True)
             if (str(row[index[t]]) if row[index[t]] is not None else None) != expected]
    assert not wrong, wrong


STATES = [  # (raw, country as written in the row, expected ISO 3166-2)
    ("CA", "US", "US-CA"), ("California", "USA", "US-CA"), ("california", "US", "US-CA"),
    (" ny ", "US", "US-NY"), ("New York", "United States", "US-NY"), ("US-TX", "US", "US-TX"),
    ("tx", "US", "US-TX"), ("WA", "US", "US-WA"), ("Washington", "US", "US-WA"),
    ("District of Columbia", "US", "US-DC"), ("D.C.", "US", "US-DC"),
    ("Washington, D.C.", "US", "US-DC"), ("PR", "US", "US-PR"), ("Puerto Rico", "US", "US-PR"),
    ("North  Carolina", "US", "US-NC"), ("ZZ", "US", None), ("Ontario", "US", None),
    ("ON", "CA", "CA-ON"), ("Ontario", "Canada", "CA-ON"), ("QC", "CA", "CA-QC"),
    ("Québec", "CA", "CA-QC"), ("QUEBEC", "CA", "CA-QC"), ("PQ", "CA", "CA-QC"),
    ("BC", "CA", "CA-BC"), ("British Columbia", "CA", "CA-BC"), ("NL", "CA", "CA-NL"),
    ("Newfoundland", "CA", "CA-NL"), ("NF", "CA", "CA-NL"), ("PEI", "CA", "CA-PE"),
    ("Prince Edward Island", "CA", "CA-PE"), ("Yukon", "CA", "CA-YT"),
    ("NWT", "CA", "CA-NT"), ("Nunavut", "CA", "CA-NU"), ("CA-AB", "CA", "CA-AB"),
    ("California", "CA", None),
    ("NSW", "AU", "AU-NSW"), ("New South Wales", "Australia", "AU-NSW"),
    ("vic", "AU", "AU-VIC"), ("Victoria", "AU", "AU-VIC"), ("QLD", "AU", "AU-QLD"),
    ("WA", "AU", "AU-WA"), ("Western Australia", "AU", "AU-WA"), ("SA", "AU", "AU-SA"),
    ("TAS", "AU", "AU-TAS"), ("Tasmania", "AU", "AU-TAS"), ("ACT", "AU", "AU-ACT"),
    ("NT", "AU", "AU-NT"), ("AU-NT", "AU", "AU-NT"), ("Texas", "AU", None),
    ("Texas", "", "US-TX"), ("Ontario", "", "CA-ON"), ("Queensland", "", "AU-QLD"),
    ("WA", "", "US-WA"),  # without a country, the US first
    ("Bavaria", "DE", None), ("n/a", "US", None), ("", "US", None),
]


def test_states(warehouse_url: str | None, stagecoach_env: Path,
                workflow_runner: Callable[..., WorkflowRun]) -> None:
    got = load_golden(stagecoach_env, warehouse_url, workflow_runner,
                      {"country": "{tag: country}",
                       "state": "{tag: state, region_from: country}"},
                      [{"state": raw, "country": c} for raw, c, _ in STATES])
    wrong = [(raw, c, expected, row[1]) for (raw, c, expected), row in zip(STATES, got, strict=True)
             if row[1] != expected]
    assert not wrong, wrong


def test_nanp_prefixes_say_what_the_leading_digits_patterns_say() -> None:
    """Each +1 region's prefixes agree with its leading-digits regex on every number start of
    five digits, so none of phonenumbers' patterns reaches past the four the prefixes cover."""
    import re

    import phonenumbers

    from assets.phone_sql import NANP, leading_prefixes

    checked = 0
    for region in NANP:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is None or not metadata.leading_digits:
            continue
        pattern = re.compile(f"(?:{metadata.leading_digits})")
        prefixes = leading_prefixes(metadata.leading_digits)
        starts = [f"{i:05d}" for i in range(100_000)]
        assert [bool(pattern.match(s)) for s in starts] == [s.startswith(prefixes)
                                                           for s in starts], region
        checked += 1
    assert checked >= 20


def test_caribbean_and_north_american_numbers_agree_with_phonenumbers() -> None:
    """Numbers of every +1 region (area codes of each region's leading digits, and random
    ones), typed with and without +1 and read with each region as the default, get exactly
    phonenumbers' answer: the region dispatch in SQL follows phonenumbers' region order."""
    import random

    import phonenumbers

    from assets.phone_sql import NANP, leading_prefixes
    from assets.semantic_tags import e164

    starts = [p for region in NANP
              for p in leading_prefixes(getattr(phonenumbers.PhoneMetadata.metadata_for_region(
                  region), "leading_digits", None) or "")]
    rng = random.Random(20)
    raws, regions = [], []
    for _ in range(30_000):
        start = rng.choice(starts) if rng.random() < 0.7 else str(rng.randint(200, 999))
        digits = start + "".join(rng.choice("0123456789") for _ in range(10 - len(start)))
        raws.append(rng.choice([f"+1 {digits}", f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                                f"1-{digits[:3]}-{digits[3:6]}-{digits[6:]}", digits]))
        regions.append(rng.choice(NANP))
    expected = [e164(raw, region) for raw, region in zip(raws, regions, strict=True)]
    got = phones_in_sql(raws, regions)
    wrong = [(r, c, g, e) for r, c, g, e in zip(raws, regions, got, expected, strict=True)
             if g != e]
    assert not wrong, wrong[:10]
    outside_us = {phonenumbers.region_code_for_number(phonenumbers.parse(e)) for e in expected
                  if e}
    assert len(outside_us) > 15 and sum(e is None for e in expected) > 3_000


def _left_to_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record each (value, region) the phone tag leaves to phonenumbers (its UDF, called once
    per distinct pair)."""
    from assets import semantic_tags

    calls: list[tuple[str, str]] = []
    e164 = semantic_tags.e164

    def recorded(value: str, region: str) -> str | None:
        calls.append((value, region))
        return e164(value, region)

    monkeypatch.setitem(semantic_tags.UDFS, semantic_tags.PHONE_UDF, recorded)
    return calls


def test_numbers_of_the_sql_regions_never_reach_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 100,000 typed numbers (all of regions read in SQL) are settled by the SQL rules: no
    call to phonenumbers, which costs about 40 µs a new number. A number of a region outside
    them still gets phonenumbers' answer, through it."""
    from assets.phone_sql import NANP, SQL_REGIONS

    raws, countries, expected = typed_numbers()
    assert set(countries) <= set(SQL_REGIONS) | set(NANP)
    calls = _left_to_phonenumbers(monkeypatch)
    assert phones_in_sql(raws, countries) == expected
    assert calls == []
    assert phones_in_sql(["+66 2 123 4567", "02 123 4567"], ["FR", "TH"]) == ["+6621234567",
                                                                             "+6621234567"]
    assert sorted(calls) == [("+66 2 123 4567", "FR"), ("02 123 4567", "TH")]


@functools.cache
def _dialled_prefixes(region: str) -> tuple[str, ...]:
    """Prefixes people dial abroad from `region` that its international-prefix pattern takes
    (`810` in Russia, `010` in Japan, `0011` in Australia...), `00` if none is found."""
    import re

    import phonenumbers

    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    pattern = getattr(meta, "international_prefix", None) or "00"
    preferred = (getattr(meta, "preferred_international_prefix", None) or "").replace("~", "")
    found = [p for p in dict.fromkeys([preferred, "00", "010", "011", "0011", "810", "0161",
                                       "001", "002", "990", "11200", "0010"])
             if p and re.fullmatch(f"(?:{pattern})", p)]
    return tuple(found) or ("00",)


def odd_numbers(count: int, regions: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Numbers written the ways the SQL rules must get right: the calling code without `+`,
    `+` with the national prefix kept (`+44 (0)20 …`), `00` and the region's international
    prefix, the national prefix alone or missing, a digit too many or too few, read in their
    own region, the main region of their calling code or another one."""
    import random

    import phonenumbers

    kinds = [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]
    rng = random.Random(seed)
    raws: list[str] = []
    rows: list[str] = []
    while len(raws) < count:
        region = rng.choice(regions)
        example = phonenumbers.example_number_for_type(region, rng.choice(kinds))
        if example is None:
            continue
        nsn = phonenumbers.national_significant_number(example)
        keep = rng.randint(1, len(nsn))
        nsn = nsn[:keep] + "".join(rng.choice("0123456789") for _ in nsn[keep:])
        nsn = rng.choice([nsn, nsn, nsn[:-1], nsn + rng.choice("0123456789")])
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert meta is not None
        code, prefix = str(example.country_code), meta.national_prefix or "0"
        idd = rng.choice(_dialled_prefixes(region))
        text = rng.choice([f"{code}{nsn}", f"{code} {nsn}", f"+{code} ({prefix}){nsn}",
                           f"+{code}{prefix}{nsn}", f"{prefix}{nsn}", nsn, f"00{code}{nsn}",
                           f"{idd} {code} {nsn}", f"{code}{prefix}{nsn}", f"+{code} {nsn}"])
        raws.append(rng.choice([text, text.replace(" ", "-"), f"({text[:3]}) {text[3:]}"]))
        rows.append(rng.choice([region, phonenumbers.region_code_for_country_code(
            example.country_code), rng.choice(regions)]))
    return raws, rows


def _in_script(text: str, zero: int) -> str:
    """`text` with its digits written in another script, whose zero is code point `zero`."""
    return text.translate({ord(d): zero + int(d) for d in "0123456789"})


def test_numbers_written_oddly_agree_with_phonenumbers() -> None:
    """30,000 numbers of the SQL regions and of regions sharing their calling codes (Jersey,
    Guernsey, Man, the Vatican, Svalbard, Åland, Kazakhstan...), written the odd ways people
    do, get exactly phonenumbers' answer; so do numbers of regions outside the list read with
    them as a column's `default_region` (read in SQL too), Argentina's and Japan's national
    prefix rules included."""
    from assets.phone_sql import SQL_REGIONS
    from assets.semantic_tags import e164
    from assets.spec import ColumnMapping

    regions = [*SQL_REGIONS, "GG", "JE", "IM", "VA", "SJ", "AX", "CC", "CX", "KZ"]
    raws, rows = odd_numbers(30_000, regions, seed=18)
    expected = [e164(raw, region) for raw, region in zip(raws, rows, strict=True)]
    got = phones_in_sql(raws, rows)
    wrong = [(r, c, g, e) for r, c, g, e in zip(raws, rows, got, expected, strict=True)
             if g != e]
    assert not wrong, wrong[:10]
    assert sum(e is not None for e in expected) > 5_000 and expected.count(None) > 5_000
    edges = [("06.12.34.56.78" + "." * 240, "FR"), ("(212) 555-0123" + "." * 240, "US"),
             ("+33 6 12 34 56 78" + " -" * 120, "FR"), ("00 290 22158", "US"),
             ("00 247 40123", "CA"), ("0033 6 12 34 56 78", "US"), ("000 33 6 12 34 56", "FR"),
             ("810 44 20 7946 0958", "RU"), ("010 44 20 7946 0958", "JP"),
             ("0011 44 20 7946 0958", "AU"), ("0161 44 20 7946 0958", "NZ"),
             (_in_script("06 12 34 56 78", 0xFF10), "FR"),  # full-width digits
             (_in_script("+33612345678", 0x0660), "FR"),  # Arabic-Indic digits
             (_in_script("06", 0x0660) + " 12 34 56 78", "FR")]
    assert phones_in_sql([v for v, _ in edges], [r for _, r in edges]) == [
        e164(v, r) for v, r in edges]
    for region in ("AR", "TH", "VN", "NG", "SA", "JP", "GB"):
        raws, rows = odd_numbers(2_000, [region], seed=19)
        expected = [e164(raw, region) for raw in raws]
        got = phones_in_sql(raws, rows, ColumnMapping(tag="phone", default_region=region))
        wrong = [(r, g, e) for r, g, e in zip(raws, got, expected, strict=True) if g != e]
        assert not wrong, (region, wrong[:10])
        assert sum(e is not None for e in expected) > 200, region


def test_an_alpha_2_code_is_its_own_country() -> None:
    """The country SQL answers alpha-2 codes itself and leaves the rest to the UDF; for that to
    change nothing, `country()` must return every alpha-2 code as it is, and lower-case or
    padded codes, names and aliases must still reach the UDF."""
    import duckdb

    from assets.semantic_tags import ALPHA_2, country, country_sql, register

    assert len(ALPHA_2) > 240
    assert [c for c in ALPHA_2 if country(c) != c] == []
    values = [*ALPHA_2, "fr", " FR", "France", "UK", "usa", "DEU", "250", "XX", "n/a"]
    with duckdb.connect() as con:
        register(con)
        got = [r[0] for r in con.execute(f"SELECT {country_sql('v')} FROM unnest($v) t(v)",
                                         {"v": values}).fetchall()]
    assert got == [country(v) for v in values]
    assert got[-9:] == ["FR", "FR", "FR", "GB", "US", "DE", "FR", None, None]


def test_the_docs_list_the_regions_read_in_sql() -> None:
    """docs/spec-reference.md names the regions whose phones are read in SQL: the list is
    `SQL_REGIONS`, and its count is said right."""
    import re

    from assets.phone_sql import SQL_REGIONS

    text = (Path(__file__).resolve().parents[2] / "docs" / "spec-reference.md").read_text()
    listed = re.search(r"\(`SQL_REGIONS`: ([A-Z, ]+)\)", " ".join(text.split()))
    assert listed, "the SQL regions are not listed in docs/spec-reference.md"
    assert tuple(listed.group(1).replace(" ", "").split(",")) == SQL_REGIONS
    assert f"and for {len(SQL_REGIONS)} other regions" in " ".join(text.split())


def test_the_national_number_bounds_are_phonenumbers_own() -> None:
    from phonenumbers import phonenumberutil

    from assets.phone_sql import MAX_NSN, MIN_NSN

    assert (MIN_NSN, MAX_NSN) == (phonenumberutil._MIN_LENGTH_FOR_NSN,
                                  phonenumberutil._MAX_LENGTH_FOR_NSN)


def test_calling_codes_are_prefix_free() -> None:
    """The `+` rules test a number's start against each calling code in turn, which is
    phonenumbers' reading (its shortest code first) only because no code starts another."""
    import phonenumbers

    codes = [str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE]
    assert not [(a, b) for a in codes for b in codes if a != b and b.startswith(a)]


def test_the_date_cast_guard_lets_through_every_value_the_cast_reads() -> None:
    """`might_cast_to_date` skips DuckDB's date cast only for values the cast cannot read:
    200,000 fuzzed values near its grammar (blanks, signs, digit runs, every separator, day
    and time tails, era marks, special words in any case). A value the guard lets through is
    cast as before, so the date tag's result is the cast's wherever the cast reads the value;
    the test also checks the fuzz is a fair one: the cast reads many values and the guard
    skips many others."""
    import random

    import duckdb
    import pyarrow as pa

    from assets.semantic_tags import might_cast_to_date

    rng = random.Random(7)
    blanks, seps = [" ", "\t", "\n", "\v", "\f", "\r", ""], ["-", "/", " ", "\\", ".", ":", "T", ""]
    tails = ["", " ", "x", "0", " (BC)", " (bc)", " BC", "T10:00", " 10:00:00", "1", "Z"]
    words = ["infinity", "-infinity", "epoch", "INFINITY", "Epoch", "infinit", "epoc"]

    def digits() -> str:
        return "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 2, 3, 4, 4, 5])))

    values = []
    for _ in range(200_000):
        if rng.random() < 0.05:
            values.append(rng.choice(blanks) + rng.choice(words) + rng.choice(tails))
            continue
        sep = rng.choice(seps)
        plausible = rng.random() < 0.5  # a month and a day that exist, padded or not
        month = f"{rng.randint(1, 12):0{rng.choice([1, 2])}d}" if plausible else digits()
        day = f"{rng.randint(1, 28):0{rng.choice([1, 2])}d}" if plausible else digits()
        values.append(rng.choice(blanks) + rng.choice(["", "", "-", "+"]) + digits() + sep
                      + month + (sep if rng.random() < 0.8 else rng.choice(seps))
                      + day + rng.choice(tails))
    with duckdb.connect() as con:
        con.register("fuzz", pa.table({"v": values}))
        missed = con.execute(f"SELECT v FROM fuzz WHERE TRY_CAST(v AS DATE) IS NOT NULL "
                             f"AND NOT {might_cast_to_date('v')}").fetchall()
        read = con.execute("SELECT count(*) FROM fuzz WHERE TRY_CAST(v AS DATE) IS NOT NULL"
                           ).fetchone()
        skipped = con.execute(f"SELECT count(*) FROM fuzz WHERE NOT {might_cast_to_date('v')}"
                              ).fetchone()
    assert not missed, missed[:10]
    assert read is not None and read[0] > 10_000  # the cast reads many of them...
    assert skipped is not None and skipped[0] > 50_000  # ...and the guard skips many others
