"""Phone benchmark: the phone tag over numbers people outside North America type, against
phonenumbers itself reading each number, side by side in one run.

    .venv/bin/python benchmarks/phones.py                    # 1,000,000 numbers, 3 rounds
    .venv/bin/python benchmarks/phones.py --rows 200000 --rounds 1

The numbers are unique (a customer file holds each phone once), typed as people do in
twelve regions: national (`06 12 34 56 78`, `030 1234567`, `07911 123456`, `(11) 91234-5678`),
international (`+49 151 23456789`), with `00` (`0033 6 …`), with the calling code and no `+`,
a digit too many; a region per row (`region_from`), as a file with a country column has them.
They come from integer hashing of the row number in DuckDB, so the same `--rows` always gives
the same numbers.

Variants, each over the same in-memory table, CPU seconds of every thread (`process_time`):

* `phonenumbers`: the reference, `parse` + `is_valid_number` + `format_number(E164)` in a
  Python loop over the rows (what the tag calls for a number its SQL rules leave).
* `tag, SQL rules`: the phone tag as a load computes it (`Staged`, its named values in
  projections below), the numbers of the regions of `phone_sql.SQL_REGIONS` read in SQL.
* `tag, before`: the same with no region read in SQL (`phone_sql.rules` returning none), as
  the tag was before the regional rules: every number goes to phonenumbers, once per distinct
  value, through the UDF.

The answers of all three must be the same for every row (checked). The ratios are
phonenumbers' CPU seconds over each variant's: above 1 is faster than the reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

if TYPE_CHECKING:
    import duckdb

    from assets.spec import ColumnMapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (region, SQL making a number of that region from the hashes h1, h2: several shapes each)
SHAPES = {
    "FR": ["printf('0%d %02d %02d %02d %02d', 6 + h1 % 2, h2 % 100, h2 // 100 % 100, "
           "h2 // 10000 % 100, h2 // 1000000 % 100)",
           "printf('+33 %d %08d', 1 + h1 % 9, h2 % 100000000)",
           "printf('0033%d%08d', 6 + h1 % 2, h2 % 100000000)"],
    "DE": ["printf('+49 15%d %08d', 1 + h1 % 9, h2 % 100000000)",
           "printf('030 %07d', h2 % 10000000)", "printf('4930%07d', h2 % 10000000)"],
    "GB": ["printf('07%03d %06d', 400 + h1 % 600, h2 % 1000000)",
           "printf('+44 (0)20 %04d %04d', h2 % 10000, h2 // 10000 % 10000)"],
    "IT": ["printf('+39 3%02d %03d %04d', h1 % 100, h2 % 1000, h2 // 1000 % 10000)",
           "printf('02 %04d %04d', h2 % 10000, h2 // 10000 % 10000)"],
    "ES": ["printf('6%02d %02d %02d %02d', h1 % 100, h2 % 100, h2 // 100 % 100, "
           "h2 // 10000 % 100)", "printf('+34 91 %03d %02d %02d', h2 % 1000, h2 % 97, "
           "h1 % 100)"],
    "NL": ["printf('06-%08d', h2 % 100000000)", "printf('+31 20 %07d', h2 % 10000000)"],
    "BE": ["printf('04%02d %02d %02d %02d', 70 + h1 % 30, h2 % 100, h2 // 100 % 100, "
           "h2 // 10000 % 100)"],
    "CH": ["printf('07%d %03d %02d %02d', 5 + h1 % 5, h2 % 1000, h2 // 1000 % 100, "
           "h2 // 100000 % 100)"],
    "AU": ["printf('04%02d %03d %03d', h1 % 100, h2 % 1000, h2 // 1000 % 1000)",
           "printf('(02) %04d %04d', h2 % 10000, h2 // 10000 % 10000)"],
    "JP": ["printf('090-%04d-%04d', h2 % 10000, h2 // 10000 % 10000)",
           "printf('03-%04d-%04d', h2 % 10000, h2 // 10000 % 10000)"],
    "BR": ["printf('(11) 9%04d-%04d', h2 % 10000, h2 // 10000 % 10000)",
           "printf('+55 21 %04d-%04d', 2000 + h2 % 8000, h2 // 10000 % 10000)"],
    "IN": ["printf('+91 9%04d %05d', h2 % 10000, h2 // 10000 % 100000)",
           "printf('0%05d %05d', 90000 + h1 % 10000, h2 % 100000)"],
}


def numbers_sql(rows: int) -> str:
    """The rows: (n, raw value, region), unique values, one shape of one region per row."""
    shapes = [(region, shape) for region, forms in SHAPES.items() for shape in forms]
    cases = " ".join(f"WHEN {i} THEN {shape}" for i, (_, shape) in enumerate(shapes))
    regions = " ".join(f"WHEN {i} THEN '{region}'" for i, (region, _) in enumerate(shapes))
    return f"""
        SELECT n, CASE k {cases} END AS "raw value", CASE k {regions} END AS country
        FROM (SELECT n, n % {len(shapes)} AS k, (n * 2654435761) % 4294967291 AS h1,
                     ((n // {len(shapes)}) * 2246822519 + n % {len(shapes)}) % 10000000019
                       AS h2
              FROM range({rows}) t(n))"""


def tag_answers(con: duckdb.DuckDBPyConnection, mapping: ColumnMapping
                ) -> tuple[list[str | None], float]:
    """The tag's answer per row, and the CPU seconds of the query."""
    from assets.feeds import clean, with_lets
    from assets.semantic_tags import Staged, register, standardise_value

    staged = Staged("_let_")
    expr = standardise_value(clean("raw value"), mapping, staged)
    register(con)  # a fresh memo, as each load starts with
    started = time.process_time()
    got = [r[0] for r in con.execute(f"SELECT {expr} FROM {with_lets('numbers', [staged.lets])} "
                                     "ORDER BY n").fetchall()]
    return got, time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="best of N, interleaved")
    args = parser.parse_args()

    import duckdb

    from assets import phone_sql
    from assets.semantic_tags import e164
    from assets.spec import ColumnMapping

    mapping = ColumnMapping(tag="phone", region_from="country")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE numbers AS {numbers_sql(args.rows)}")
    rows = con.execute("SELECT \"raw value\", country FROM numbers ORDER BY n").fetchall()
    [(distinct,)] = con.execute("SELECT count(DISTINCT \"raw value\") FROM numbers").fetchall()
    print(f"{len(rows):,} numbers ({distinct:,} distinct) of "
          f"{len(SHAPES)} regions, {sum(map(len, SHAPES.values()))} shapes; DuckDB "
          f"{duckdb.__version__}, 2 threads")
    best = {"phonenumbers": float("inf"), "tag, SQL rules": float("inf"),
            "tag, before": float("inf")}
    answers: dict[str, list[str | None]] = {}
    for _ in range(args.rounds):
        started = time.process_time()
        answers["phonenumbers"] = [e164(value.strip(), region) for value, region in rows]
        best["phonenumbers"] = min(best["phonenumbers"], time.process_time() - started)
        answers["tag, SQL rules"], seconds = tag_answers(con, mapping)
        best["tag, SQL rules"] = min(best["tag, SQL rules"], seconds)
        with mock.patch.object(phone_sql, "rules", lambda _regions: ((), ())):
            answers["tag, before"], seconds = tag_answers(con, mapping)
        best["tag, before"] = min(best["tag, before"], seconds)
    reference = answers["phonenumbers"]
    for name, got in answers.items():
        wrong = sum(g != e for g, e in zip(got, reference, strict=True))
        if wrong:
            print(f"FAIL: {name} disagrees with phonenumbers on {wrong:,} rows")
            return 1
    valid = sum(a is not None for a in reference)
    print(f"all three agree on every row ({valid:,} valid, {len(rows) - valid:,} invalid)\n")
    print(f"{'variant':<18}{'CPU s':>9}{'µs / number':>14}{'vs phonenumbers':>18}")
    for name, seconds in best.items():
        print(f"{name:<18}{seconds:>9.2f}{seconds / len(rows) * 1e6:>14.2f}"
              f"{best['phonenumbers'] / seconds:>17.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
