"""Identity resolution on small hand-made populations: each exact rule, the household rule,
survivorship, splink on a seeded population, and ids that stay put through merges and splits."""

from __future__ import annotations

import json
import random
import re
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from assets.identity import engine
from assets.spec import IdentityResolution
from orchestration.spec_loader import SpecInvalid, load_workflow_text

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"email": "email", "phone": "phone", "first_name": "given_name",
          "last_name": "surname", "birth_date": "birthdate", "postal_code": "postal_code"}
EXACT = [{"name": "same_email", "columns": ["email"]},
         {"name": "same_phone", "columns": ["phone"]}]


def ident(**overrides) -> IdentityResolution:
    spec = {"sources": {"web": {"key": "id", "updated_at": "ts"},
                        "store": {"key": "id", "updated_at": "ts"}},
            "fields": FIELDS, "exact_rules": EXACT} | overrides
    return IdentityResolution.model_validate(spec)


def rec(key: str, ts: int = 1, **values) -> dict:
    return {"source_key": key, "updated_at": datetime(2024, 1, ts), **values}


def table(rows: list[dict]) -> pa.Table:
    columns = {"source_key": pa.string(), "updated_at": pa.timestamp("us"),
               **{f: pa.string() for f in FIELDS}}
    columns["birth_date"] = pa.date32()
    return pa.table({c: pa.array([r.get(c) for r in rows], t) for c, t in columns.items()})


class Runner:
    """Runs resolutions one after another, each against the previous run's map."""

    def __init__(self, spec: IdentityResolution):
        self.spec, self.previous, self.max_seq = spec, None, 0
        self.changes: list[dict] = []

    def run(self, web: list[dict], store: list[dict] | None = None) -> engine.Resolution:
        with duckdb.connect() as con:
            engine.prepare_records(con, self.spec, {"web": table(web),
                                                    "store": table(store or [])})
            engine.set_previous(con, self.previous)
            result = engine.resolve(con, self.spec, max_seq=self.max_seq, run_id="t",
                                    now=datetime(2026, 12, 1))
        self.previous = result.map
        self.max_seq = max(self.max_seq, result.stats["max_seq"])
        self.changes += result.id_changes.to_pylist()
        return result


def ids(result: engine.Resolution) -> dict[str, str]:
    """`source:key` → customer id."""
    return {f"{r['source_table']}:{r['source_key']}": r["customer_id"]
            for r in result.map.to_pylist()}


def groups(result: engine.Resolution) -> set[frozenset[str]]:
    found: dict[str, set[str]] = {}
    for record, customer in ids(result).items():
        found.setdefault(customer, set()).add(record)
    return {frozenset(g) for g in found.values()}


def rules(result: engine.Resolution) -> dict[frozenset[str], str]:
    return {frozenset({f"{p['source_table_l']}:{p['source_key_l']}",
                       f"{p['source_table_r']}:{p['source_key_r']}"}): p["rule"]
            for p in result.pairs.to_pylist()}


# ---------------------------------------------------------------- exact layer


def test_each_exact_rule_links_and_names_its_pairs() -> None:
    result = Runner(ident()).run(
        [rec("1", email="ann@x.com", first_name="Ann"), rec("2", phone="+15550001",
                                                            first_name="Bob")],
        [rec("a", email="ann@x.com", first_name="Ann"), rec("b", phone="+15550001",
                                                            first_name="Bob"),
         rec("c", email="carl@x.com", first_name="Carl")])
    assert groups(result) == {frozenset({"web:1", "store:a"}), frozenset({"web:2", "store:b"}),
                              frozenset({"store:c"})}
    assert rules(result) == {frozenset({"web:1", "store:a"}): "same_email",
                             frozenset({"web:2", "store:b"}): "same_phone"}
    assert result.stats["exact_links"] == 2
    assert result.stats["match_rate"] == pytest.approx(4 / 5)


def test_a_rule_needs_every_field_present() -> None:
    spec = ident(exact_rules=[{"name": "name_and_birth",
                               "columns": ["first_name", "last_name", "birth_date"]}])
    result = Runner(spec).run(
        [rec("1", first_name="ann", last_name="LEE", birth_date=date(1980, 1, 2)),
         rec("2", first_name="Ann", last_name="Lee")],
        [rec("a", first_name="ANN", last_name="lee", birth_date=date(1980, 1, 2))])
    # Compared case-blind; a missing birth date never matches.
    assert groups(result) == {frozenset({"web:1", "store:a"}), frozenset({"web:2"})}


def test_a_shared_household_phone_alone_never_merges_two_people() -> None:
    result = Runner(ident()).run(
        [rec("1", phone="+15550001", first_name="Carl", last_name="Poe"),
         rec("2", phone="+15550001", first_name="Dora", last_name="Poe")],
        [rec("a", phone="+15550001", first_name="Dora", last_name="Poe"),
         rec("b", phone="+15550001", first_name="Bobby", last_name="Poe"),
         rec("c", phone="+15550001", first_name="Robert", last_name="Poe")])
    # The phone is shared (several given names hold it): the rule also needs the given name,
    # nicknames included (Bobby = Robert), and says so.
    assert groups(result) == {frozenset({"web:1"}), frozenset({"web:2", "store:a"}),
                              frozenset({"store:b", "store:c"})}
    assert set(rules(result).values()) == {"same_phone + first_name, birth_date (shared value)"}


def test_a_father_and_son_of_one_name_on_one_phone_stay_two() -> None:
    spec = ident(exact_rules=[{"name": "phone_and_name", "columns": ["phone", "first_name"]}])
    result = Runner(spec).run(
        [rec("1", phone="+1555", first_name="John", birth_date=date(1950, 3, 4)),
         rec("2", phone="+1555", first_name="John", birth_date=date(1980, 6, 7))],
        [rec("a", phone="+1555", first_name="Jack", birth_date=date(1980, 6, 7))])
    # (phone, given name) is held by two birth dates: it also needs the same birth date.
    assert groups(result) == {frozenset({"web:1"}), frozenset({"web:2", "store:a"})}
    assert set(rules(result).values()) == {"phone_and_name + birth_date (shared value)"}


def test_a_shared_value_without_a_given_name_links_nothing() -> None:
    result = Runner(ident()).run(
        [rec("1", email="home@x.com", first_name="Carl"),
         rec("2", email="home@x.com", first_name="Dora")],
        [rec("a", email="home@x.com")])
    assert groups(result) == {frozenset({"web:1"}), frozenset({"web:2"}),
                              frozenset({"store:a"})}


def test_a_personal_value_links_without_the_given_name() -> None:
    result = Runner(ident()).run([rec("1", email="ann@x.com", first_name="Ann")],
                                 [rec("a", email="ann@x.com"),
                                  rec("b", email="ann@x.com", first_name="Annie")])
    # Ann and Annie are two given names on one e-mail: shared, so only same-name records join
    # by it; the record without a name cannot be told apart and stays alone.
    assert groups(result) == {frozenset({"web:1"}), frozenset({"store:a"}),
                              frozenset({"store:b"})}
    result = Runner(ident()).run([rec("1", email="ann@x.com", first_name="Ann")],
                                 [rec("a", email="ann@x.com")])
    assert groups(result) == {frozenset({"web:1", "store:a"})}


def test_connected_components_label_each_node_by_its_smallest() -> None:
    left, right = np.array([5, 1, 3, 7]), np.array([1, 3, 0, 6])
    assert engine.connected_components(8, left, right).tolist() == [0, 0, 2, 0, 4, 0, 6, 6]
    assert engine.connected_components(3, np.array([], np.int64),
                                       np.array([], np.int64)).tolist() == [0, 1, 2]


# ---------------------------------------------------------------- survivorship


def test_each_survivorship_rule() -> None:
    spec = ident(survivorship={
        "email": "most_recent", "first_name": "most_frequent",
        "last_name": {"rule": "first_non_null", "sources": ["store"]},
        "postal_code": {"rule": "preferred_source", "sources": ["store"]},
        "phone": "first_non_null"})
    result = Runner(spec).run(
        [rec("1", 1, email="ann@x.com", first_name="Elizabeth", last_name="Lee", phone="+1",
             postal_code="11111"),
         rec("2", 5, email="ann@x.com", first_name="Liz", postal_code="22222")],
        [rec("a", 3, email="ann@x.com", first_name="Elizabeth", last_name="Li", phone="+2"),
         rec("b", 2, email="ann@x.com", first_name="Elizabeth", postal_code="33333")])
    [row] = result.customers.to_pylist()
    assert row["email"] == "ann@x.com"
    assert row["first_name"] == "Elizabeth"  # 3 of 4 records (Liz is the newest)
    assert row["last_name"] == "Li"  # the store first, though the web one is older
    assert row["postal_code"] == "33333"  # the store's (its only one), not the newer web one
    assert row["phone"] == "+1"  # sources in spec order, then the oldest record
    assert (row["source_records"], row["records_web"], row["records_store"]) == (4, 2, 2)
    assert row["first_seen_at"] == datetime(2024, 1, 1)
    assert row["last_updated_at"] == datetime(2024, 1, 5)


def test_most_recent_skips_nulls_and_takes_the_newest() -> None:
    result = Runner(ident()).run(
        [rec("1", 1, email="ann@x.com", phone="+1"), rec("2", 9, email="ann@x.com")],
        [rec("a", 4, email="ann@x.com", phone="+2")])
    [row] = result.customers.to_pylist()
    assert row["phone"] == "+2"


# ---------------------------------------------------------------- stable ids


def test_ids_stay_put_when_records_arrive() -> None:
    runner = Runner(ident())
    first = runner.run([rec("1", email="ann@x.com"), rec("2", email="bob@x.com")])
    assert sorted(ids(first).values()) == ["SC0000000001", "SC0000000002"]
    second = runner.run([rec("0", email="zed@x.com"), rec("1", email="ann@x.com"),
                         rec("2", email="bob@x.com")], [rec("a", email="bob@x.com")])
    # The new record sorts first, yet every old record keeps its id; new people get new ids.
    assert ids(second) == {"web:0": "SC0000000003", "web:1": "SC0000000001",
                           "web:2": "SC0000000002", "store:a": "SC0000000002"}
    assert second.stats["stability"] == 1.0
    assert (second.stats["ids_new"], second.stats["ids_merged"]) == (1, 0)


def test_a_merge_keeps_the_oldest_id_and_retires_the_other() -> None:
    runner = Runner(ident())
    runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555", first_name="Ann")])
    # A store record carrying both the e-mail and the phone joins the two.
    second = runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555",
                                                          first_name="Ann")],
                        [rec("a", email="ann@x.com", phone="+1555", first_name="Ann")])
    assert set(ids(second).values()) == {"SC0000000001"}
    assert runner.changes == [{
        "change": "merged", "customer_id": "SC0000000001", "customer_seq": 1,
        "other_customer_id": "SC0000000002", "other_seq": 2, "records": 1, "run_id": "t",
        "changed_at": datetime(2026, 12, 1)}]
    assert second.stats["ids_merged"] == 1
    assert second.stats["stability"] == pytest.approx(1 / 2)


def test_a_split_keeps_the_id_with_the_majority_and_records_the_new_one() -> None:
    runner = Runner(ident())
    records = [rec("1", email="ann@x.com"), rec("2", email="ann@x.com"),
               rec("3", email="ann@x.com"), rec("4", email="bob@x.com")]
    runner.run(records)
    # Record 3's e-mail was a mistake, corrected at the source: it leaves Ann's cluster.
    records[2] = rec("3", email="cat@x.com")
    second = runner.run(records)
    assert ids(second) == {"web:1": "SC0000000001", "web:2": "SC0000000001",
                           "web:3": "SC0000000003", "web:4": "SC0000000002"}
    assert [(c["change"], c["customer_id"], c["other_customer_id"]) for c in runner.changes] \
        == [("split", "SC0000000003", "SC0000000001")]
    assert second.stats["stability"] == pytest.approx(3 / 4)


def test_a_retired_id_is_never_handed_out_again() -> None:
    runner = Runner(ident())
    runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555", first_name="Ann")])
    runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555", first_name="Ann")],
               [rec("a", email="ann@x.com", phone="+1555", first_name="Ann")])
    # SC…2 was retired by the merge; the next new person gets SC…3.
    third = runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555",
                                                         first_name="Ann"),
                        rec("9", email="new@x.com")],
                       [rec("a", email="ann@x.com", phone="+1555", first_name="Ann")])
    assert ids(third)["web:9"] == "SC0000000003"


def test_the_same_input_gives_the_same_ids_whatever_the_row_order() -> None:
    rows = [rec(str(n), email=f"p{n % 7}@x.com") for n in range(30)]
    a = Runner(ident()).run(rows)
    b = Runner(ident()).run(list(reversed(rows)))
    assert ids(a) == ids(b)


# ---------------------------------------------------------------- splink


def population(seed: int, people: int = 300) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Two sources with typos, nicknames, missing and changed e-mails, and truth."""
    rng = random.Random(seed)
    given = ["robert", "mary", "john", "linda", "james", "susan", "david", "karen", "paul", "ruth"]
    nick = {"robert": "bob", "john": "jack", "james": "jim", "susan": "sue", "david": "dave"}
    surnames = [f"{a}{b}" for a in ("hol", "ber", "mor", "lin", "ost", "par", "van", "wes")
                for b in ("ton", "man", "son", "ley", "berg", "ford", "wood")]
    web, store, truth = [], [], {}
    for p in range(people):
        first, last = rng.choice(given), rng.choice(surnames)
        born = date(rng.randint(1950, 2000), rng.randint(1, 12), rng.randint(1, 28))
        email, phone = f"{first}.{last}{p}@x.com", f"+1555{p:06d}"
        postal = f"{rng.randint(10000, 99999)}"
        web.append(rec(f"w{p}", email=email, phone=phone, first_name=first.title(),
                       last_name=last.title(), birth_date=born, postal_code=postal))
        truth[f"web:w{p}"] = p
        if rng.random() < 0.6:
            f2 = nick.get(first, first) if rng.random() < 0.3 else first
            l2 = last[:2] + last[3] + last[2] + last[4:] if rng.random() < 0.2 else last
            e2 = None if rng.random() < 0.5 else email
            store.append(rec(f"s{p}", email=e2, phone=None if rng.random() < 0.5 else phone,
                             first_name=f2.title(), last_name=l2.title(), birth_date=born,
                             postal_code=postal))
            truth[f"store:s{p}"] = p
    return web, store, truth


def pair_scores(result: engine.Resolution, truth: dict[str, int]) -> tuple[float, float]:
    found = ids(result)
    predicted, true = set(), set()
    records = sorted(found)
    by: dict[str, list[str]] = {}
    for r in records:
        by.setdefault(found[r], []).append(r)
    for members in by.values():
        predicted |= {(a, b) for a in members for b in members if a < b}
    people: dict[int, list[str]] = {}
    for r in records:
        people.setdefault(truth[r], []).append(r)
    for members in people.values():
        true |= {(a, b) for a in members for b in members if a < b}
    return len(predicted & true) / len(predicted), len(predicted & true) / len(true)


SPLINK = {"blocking_rules": [["email"], ["phone"], ["last_name", "birth_date"],
                             ["first_name", "birth_date"]],
          "threshold": 0.9, "training": {"seed": 1, "max_pairs": 100_000}}


def test_splink_finds_what_the_exact_rules_miss() -> None:
    web, store, truth = population(3)
    exact = Runner(ident()).run(web, store)
    both = Runner(ident(probabilistic=SPLINK)).run(web, store)
    exact_p, exact_r = pair_scores(exact, truth)
    p, r = pair_scores(both, truth)
    assert exact_p == 1.0
    assert r > exact_r + 0.1  # store records without e-mail or phone, found by name and birth
    assert p >= 0.97 and r >= 0.95
    assert both.stats["splink_links"] > 0
    layers = {row["layer"] for row in both.pairs.to_pylist()}
    assert layers == {"exact", "splink"}


def test_a_given_splink_model_gives_the_same_clusters(tmp_path: Path) -> None:
    web, store, _ = population(5, people=150)
    trained = Runner(ident(probabilistic=SPLINK)).run(web, store)
    model = tmp_path / "model.json"
    model.write_text(json.dumps(trained.stats["splink_model"]))
    spec = ident(probabilistic=SPLINK | {"training": {"method": "given",
                                                      "model_file": str(model)}})
    given = Runner(spec).run(web, store)
    assert groups(given) == groups(trained)


def test_an_em_pass_no_pair_agrees_on_is_skipped_and_named() -> None:
    web, store, truth = population(3)
    for n, record in enumerate(web + store):  # no two records share a postal code
        record["postal_code"] = f"{n:05d}"
    training = SPLINK["training"] | {"em_blocking_rules": [["postal_code"], ["email"],
                                                           ["last_name", "birth_date"]]}
    result = Runner(ident(probabilistic=SPLINK | {"training": training})).run(web, store)
    assert result.stats["em_passes_skipped"] == ["postal_code"]
    p, r = pair_scores(result, truth)
    assert p >= 0.97 and r >= 0.95  # the other passes trained the model


def test_splink_never_merges_a_household_by_its_shared_values() -> None:
    web = [rec(f"{n}", email="home@x.com", phone="+1555", last_name="Poe", postal_code="10001",
               first_name=name, birth_date=date(1970 + n, 1, 1))
           for n, name in enumerate(["Carl", "Dora", "Emil", "Fay"])]
    store = [rec(f"s{n}", email="home@x.com", phone="+1555", last_name="Poe",
                 postal_code="10001", first_name=name, birth_date=date(1990, 1, 1))
             for n, name in enumerate(["Gus", "Hana", "Ivo", "Jan"])]
    people, _, _ = population(9, people=120)
    result = Runner(ident(probabilistic=SPLINK)).run(web + people, store)
    household = {f"web:{n}" for n in range(4)} | {f"store:s{n}" for n in range(4)}
    for group in groups(result):
        assert len(group & household) <= 1, group


def test_splink_keeps_a_senior_and_junior_of_one_name_apart() -> None:
    web = [rec("sr", phone="+1555", last_name="Poe", postal_code="10001", first_name="John",
               birth_date=date(1950, 3, 4)),
           rec("jr", phone="+1666", last_name="Poe", postal_code="10001", first_name="John",
               birth_date=date(1980, 3, 4)),
           rec("jr2", phone="+1777", last_name="Poe", postal_code="10001", first_name="Jack",
               birth_date=date(1980, 4, 3))]  # Jack = John, the day and month swapped
    people, store, _ = population(9, people=120)
    result = Runner(ident(probabilistic=SPLINK | {"blocking_rules": [
        ["last_name", "postal_code"], ["first_name", "birth_date"], ["email"]]})).run(
        web + people, store)
    found = ids(result)
    assert found["web:sr"] != found["web:jr"]
    # A swapped day and month is a typo, not another person: never refused for it.
    assert rules(result).get(frozenset({"web:jr", "web:jr2"})) != \
        "splink (refused by the household rule)"


# ---------------------------------------------------------------- the spec


BASE = """
workflow: {name: people}
connections:
  landing: {kind: folder, path: /tmp}
couriers:
  web: {from: landing, path: web.csv}
  store: {from: landing, path: store.csv}
domain_tables:
  web:
    from: web
    columns: {id: {tag: id}, email: {tag: email}, first_name: {tag: given_name},
              ts: {tag: datetime}}
  store:
    from: store
    columns: {member: {tag: id}, mail: {tag: email}, given: {tag: given_name}}
identity:
  people:
    sources:
      web: {key: id, updated_at: ts}
      store: {key: member, columns: {email: mail, first_name: given}}
    fields: {email: email, first_name: given_name}
    exact_rules:
      - {name: same_email, columns: [email]}
"""

CATALOGUE = [
    ("unknown domain table", ("      store: {key: member", "      stor: {key: member"),
     ["<inline>.yaml:20 identity.people.sources.stor: unknown domain table 'stor' (known: "
      "store, web)"]),
    ("missing column", ("{email: mail, first_name: given}", "{email: mail2, first_name: given}"),
     ["<inline>.yaml:20 identity.people.sources.store.columns.email: domain table 'store' has "
      "no column 'mail2' (it has: _partition, _source_file, given, mail, member); map the "
      "field with `columns: {field: column}` or list it under `absent:`"]),
    ("an update time that is text", ("ts: {tag: datetime}", "ts: {tag: text}"),
     ["<inline>.yaml:19 identity.people.sources.web.updated_at: column 'ts' of domain table "
      "'web' is tagged 'text'; it must be a datetime or date (tag: date, birthdate or "
      "datetime)"]),
    ("unknown field in a rule", ("columns: [email]}", "columns: [e_mail]}"),
     ["<inline>.yaml:23 identity.people.exact_rules.0.columns: unknown field 'e_mail' (known: "
      "email, first_name)"]),
    ("household values alone", ("fields: {email: email, first_name: given_name}",
                                "fields: {email: email, first_name: surname}"),
     ["<inline>.yaml:23 identity.people.exact_rules.0.columns: exact rule 'same_email' "
      "compares only values a household shares (email): alone they would merge its people. "
      "Add a given_name, full_name or birthdate field (the household rule then needs it where "
      "a value is shared) or add such a field to the rule"]),
    ("preferred source without sources", ("    exact_rules:", "    survivorship: {email: "
                                          "preferred_source}\n    exact_rules:"),
     ["<inline>.yaml:22 identity.people.survivorship.email.sources: preferred_source needs "
      "`sources:`, the sources in order of preference"]),
    ("nothing to match with", ("    exact_rules:\n      - {name: same_email, columns: [email]}",
                               ""),
     ["<inline>.yaml:17 identity.people: give `exact_rules`, `probabilistic` or both: nothing "
      "would match"]),
    ("given model without a file", ("    exact_rules:", "    probabilistic:\n      "
                                    "blocking_rules: [[email]]\n      training: {method: "
                                    "given}\n    exact_rules:"),
     ["<inline>.yaml:24 identity.people.probabilistic.training.method: method `given` reads a "
      "splink model: set `model_file:` (a JSON from save_model_to_json)"]),
    ("a missing model file", ("    exact_rules:", "    probabilistic:\n      "
                              "blocking_rules: [[email]]\n      training: {method: given, "
                              "model_file: nowhere.json}\n    exact_rules:"),
     ["<inline>.yaml:24 identity.people.probabilistic.training.model_file: no such file "
      "'{base}/nowhere.json' (a splink model JSON, saved by linker.misc.save_model_to_json; "
      "paths are relative to the spec file)"]),
    ("a reserved database name", ("identity:\n  people:", "databases:\n  identity:\n    "
                                  "tables: {x: {sql: select 1}}\nidentity:\n  people:"),
     ["<inline>.yaml:17 databases.identity: 'identity' is reserved for Stagecoach's own "
      "schema; choose another database name"]),
]


def errors_of(text: str, base: Path) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        load_workflow_text(text, base=base)
    return [str(e) for e in caught.value.errors]


def test_the_base_spec_is_valid(tmp_path: Path) -> None:
    workflow = load_workflow_text(BASE, base=tmp_path)
    assert workflow.identity["people"].source_column("store", "email") == "mail"


@pytest.mark.bad_input
@pytest.mark.parametrize(("old_new", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_bad_identity_spec(old_new: tuple[str, str], expected: list[str],
                           tmp_path: Path) -> None:
    old, new = old_new
    assert old in BASE
    assert errors_of(BASE.replace(old, new, 1), tmp_path) == [
        e.replace("{base}", str(tmp_path)) for e in expected]


def test_sql_may_read_the_identity_tables_and_nothing_else_there(tmp_path: Path) -> None:
    text = BASE + """databases:
  crm:
    tables:
      people: {sql: "select * from identity.people join identity.people_map using (customer_id)"}
      typo: {sql: "select * from identity.peple"}
"""
    [error] = errors_of(text, tmp_path)
    assert "databases.crm.tables.typo.sql: unknown table 'identity.peple'" in error
    assert "identity.people_id_changes, identity.people_map, identity.people_pairs" in error


def test_the_documented_snippet_validates(tmp_path: Path) -> None:
    """docs/identity.md's full example is a valid workflow."""
    doc = (REPO / "docs" / "identity.md").read_text(encoding="utf-8")
    [snippet] = re.findall(r"```yaml\n(# full example\n.*?)```", doc, flags=re.S)
    workflow = load_workflow_text(snippet, base=tmp_path)
    assert set(workflow.identity) == {"customers"}
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", doc, flags=re.M))
    keys = {"sources", "fields", "exact_rules", "probabilistic", "survivorship", "id_prefix",
            "review_pairs", "checks", "description", "owners"}
    keys |= {f"sources.{k}" for k in ("key", "columns", "absent", "updated_at")}
    keys |= {f"probabilistic.{k}" for k in ("blocking_rules", "threshold", "review_floor",
                                            "training")}
    keys |= {f"probabilistic.training.{k}" for k in ("method", "model_file",
                                                     "em_blocking_rules", "recall",
                                                     "max_pairs", "seed")}
    keys |= {f"checks.{k}" for k in ("max_cluster_size", "min_stability", "blocking")}
    assert keys <= documented, sorted(keys - documented)


def test_the_checks_fail_on_a_too_large_cluster_and_lost_ids() -> None:
    """The merge above, against checks it breaks: the customer gathers 3 records (more than
    2) and half the records lost their id (below 90%). Both checks fail, say why, and warn
    unless `blocking` (then they are errors that stop what follows)."""
    import dagster as dg

    from assets.identity.asset import _results

    for blocking, severity in ((False, dg.AssetCheckSeverity.WARN),
                               (True, dg.AssetCheckSeverity.ERROR)):
        spec = ident(checks={"max_cluster_size": 2, "min_stability": "90%",
                             "blocking": blocking})
        runner = Runner(spec)
        runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555", first_name="Ann")])
        merged = runner.run([rec("1", email="ann@x.com"), rec("2", phone="+1555",
                                                             first_name="Ann")],
                            [rec("a", email="ann@x.com", phone="+1555", first_name="Ann")])
        keys = {part: dg.AssetKey(["identity", part]) for part in
                ("customers", "map", "pairs", "id_changes")}
        checks = {r.check_name: r for r in _results(spec, keys, merged)
                  if isinstance(r, dg.AssetCheckResult)}
        size, stable = checks["max_cluster_size"], checks["id_stability"]
        assert (size.passed, stable.passed) == (False, False)
        assert size.severity == stable.severity == severity
        assert size.description == ("a customer gathers 3 source records, more than "
                                    "max_cluster_size 2: see biggest_clusters and the pairs "
                                    "table")
        assert stable.description is not None
        assert stable.description.startswith("50.00% of the previous run's records kept")


def test_review_pairs_are_capped_per_layer() -> None:
    """Twelve people, each with two records sharing an e-mail: 12 exact pairs, of which
    `review_pairs` go to the review table."""
    web = [rec(str(n), email=f"p{n}@x.com") for n in range(12)]
    store = [rec(f"s{n}", email=f"p{n}@x.com") for n in range(12)]
    everything = Runner(ident()).run(web, store)
    assert everything.pairs.num_rows == 12
    capped = Runner(ident(review_pairs=5)).run(web, store)
    assert capped.pairs.num_rows == 5
    assert set(capped.pairs.column("layer").to_pylist()) == {"exact"}
    assert capped.stats["exact_links"] == 12  # the cap is on the review table only
