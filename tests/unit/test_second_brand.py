"""A second brand's nightly drop, as issue 16 tried it: 5,000 members with messy names, e-mails,
phones, birth dates and postal codes, loaded through the real workflow into DuckDB and
PostgreSQL. Every unusable value is counted in the metadata and the `standardisation` check,
rows with an unreadable birth date go to stagecoach.rejects, and no correctly written name is
changed. The expected counts come from the reference libraries (phonenumbers, email-validator)."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from pathlib import Path

from assets.semantic_tags import e164, email
from tests.conftest import WorkflowRun
from tests.unit.test_value_accounts import warehouse

MEMBERS = 5_000
SPEC = """\
workflow: {{name: members}}
connections:
  inbox: {{kind: folder, path: inbox}}
couriers:
  members: {{from: inbox, path: members.csv}}
domain_tables:
  brand_members:
    from: members
{table}
"""


def write(root: Path, table: str, content: str | bytes) -> Path:
    """The workflow `members` (its own table, domain.brand_members: the PostgreSQL test database
    is shared, and tests/integration/test_postgres.py loads a domain.members) and its
    file."""
    workflows = root / "workflows"
    (workflows / "inbox").mkdir(parents=True, exist_ok=True)
    (workflows / "members.yaml").write_text(SPEC.format(table=table))
    target = workflows / "inbox" / "members.csv"
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    return workflows


TABLE = """\
    bad_rows: reject
    standardisation: {blocking: false}
    columns:
      id: {tag: id}
      first: {tag: given_name}
      last: {tag: surname}
      email: {tag: email, max_invalid: 20%}
      phone: {tag: phone, default_region: US, max_invalid: 30%}
      born: {tag: birthdate, on_invalid: reject}
      zip: {tag: postal_code, default_region: US}
"""
WRITTEN = ["Anne-Sophie", "O'Brien", "McDonald", "van der Berg", "de la Cruz", "José", "李小龙",
           "DiCaprio", "MacKenzie", "d'Artagnan", "Jean-Luc", "O\u2019Neill"]
MESSY = [("ANNE-SOPHIE", "Anne-Sophie"), ("o'brien", "O'Brien"), ("MCDONALD", "McDonald"),
         ("VAN DER BERG", "van der Berg"), ("  josé ", "José"), ("DE LA CRUZ", "de la Cruz")]
BAD_EMAILS = ["n/a", "not-an-email", "john at example.com", "a@b", "x@example..com", "-"]
BAD_PHONES = ["call me", "555-0134", "n/a", "000", "12345678901234567"]


def drop() -> tuple[str, dict[str, int], dict[int, str], int]:
    """The CSV, the expected invalid counts, the correctly written names by row, the rows whose
    birth date is unreadable."""
    rng = random.Random(20)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "first", "last", "email", "phone", "born", "zip"])
    invalid = {"email": 0, "phone": 0, "zip": 0}
    written: dict[int, str] = {}
    unreadable = 0
    for i in range(MEMBERS):
        if rng.random() < 0.7:
            first = rng.choice(WRITTEN)
            written[i] = first
        else:
            first = rng.choice(MESSY)[0]
        last = rng.choice(WRITTEN + [m for m, _ in MESSY])
        mail = rng.choice(BAD_EMAILS) if rng.random() < 0.25 else \
            f" {first.split()[0].lower()}.{i}@{rng.choice(['Example.com', 'shop.example.org'])}"
        invalid["email"] += email(mail.strip(), "t") is None
        phone = rng.choice(BAD_PHONES) if rng.random() < 0.25 else \
            rng.choice(["({a}) 555-01{b:02d}", "{a}.555.01{b:02d}", "+1 {a} 555 01{b:02d}"]
                       ).format(a=rng.choice([201, 212, 415, 617]), b=rng.randint(0, 99))
        invalid["phone"] += e164(phone, "US") is None
        born = rng.choice(["1975-03-02", "03/02/1975", "02.03.1975", "unknown", "1899-01-01"])
        unreadable += born in ("unknown", "1899-01-01")
        zip_code = rng.choice(["2134", "02134", "10001-1234", "ABCDE", "9021"])
        invalid["zip"] += zip_code == "ABCDE"
        writer.writerow([f"M{i:05d}", first, last, mail, phone, born, zip_code])
    return out.getvalue(), invalid, written, unreadable


def test_the_second_brand_drop(warehouse_url: str | None, stagecoach_env: Path,
                               workflow_runner: Callable[..., WorkflowRun]) -> None:
    content, invalid, written, unreadable = drop()
    assert invalid["email"] > 1_000 and invalid["phone"] > 1_000 and unreadable > 1_000
    run = workflow_runner(write(stagecoach_env, TABLE, content), "members")
    assert run.success, run.failures()
    meta = run.metadata("domain", "brand_members")
    loaded = MEMBERS - unreadable
    assert meta["rows_rejected"] == unreadable and meta["dagster/row_count"] == loaded
    # counted over every value sent, the rejected rows' included
    assert meta["invalid/email"] == invalid["email"]
    assert meta["invalid/phone"] == invalid["phone"]
    assert meta["invalid/zip"] == invalid["zip"]
    assert meta["invalid/born"] == unreadable
    assert meta["invalid/first"] == 0 and meta["invalid/last"] == 0
    examples = meta["invalid_examples/email"].split(", ")
    assert examples and all(len(e) <= 4 or e.endswith("…") for e in examples)  # masked
    [check] = run.result.get_asset_check_evaluations()
    assert check.check_name == "standardisation" and not check.passed
    assert check.description.startswith(f"`email`: {invalid['email']:,} of {MEMBERS:,} values "
                                        "invalid"), check.description
    assert "`phone`" not in check.description  # within its 30%
    wh = warehouse(stagecoach_env, warehouse_url)
    rejected = wh.fetch(f"SELECT count(*) FROM stagecoach.rejects WHERE run_id = "
                        f"{wh.placeholder.format('run')}", {"run": run.result.run_id})
    assert rejected[0][0] == unreadable
    rows = dict(wh.fetch('SELECT id, first FROM "domain"."brand_members"'))
    kept = {i: name for i, name in written.items() if f"M{i:05d}" in rows}
    assert len(kept) > 2_000
    changed = {i: (name, rows[f"M{i:05d}"]) for i, name in kept.items()
               if rows[f"M{i:05d}"] != name}
    assert not changed, list(changed.items())[:5]
    assert dict(wh.fetch('SELECT first, count(*) FROM "domain"."brand_members" GROUP BY first')
                ).keys() <= set(WRITTEN)  # the messy ones re-cased to how people write them
