"""Identity resolution benchmark: quality against known truth, scale beside splink's own
example pipeline, and id stability between two runs.

    .venv/bin/python benchmarks/identity.py                       # everything, full sizes
    .venv/bin/python benchmarks/identity.py --people 5000 --scale-records 20000   # quick
    .venv/bin/python benchmarks/identity.py --only quality|stability|scale

1. A population with known truth (`--people`, default 200,000): people in households of 1-4
   (a household shares a surname, mostly a phone, a postal code and sometimes an e-mail), each
   person written into 2-3 sources (web shop 70%, loyalty 55%, CRM 40%; 3% twice in the web
   shop) with the corruptions real files hold: typos in names, given name and surname swapped,
   nicknames, missing and changed e-mails, moved postal codes, missing or household phones,
   missing birth dates and day/month swaps. Same seed, same records.
2. Quality: the records go into a DuckDB warehouse as domain tables, and the identity section
   resolves them (the exact layer alone, then with splink) through `run_resolution`, the code
   the asset runs. Pairwise precision/recall/F1 (pairs of records put together) and cluster
   precision/recall/F1 (predicted clusters equal to a true person's records) against the truth.
   Targets: pairwise F1 >= 0.95 with splink; precision >= 0.99 for the exact layer.
3. Stability: a second run after 1% new records (half new people, half new records of known
   people) and 1% changed records (a new e-mail, a move, a new phone): the share of the first
   run's records that keep their customer id (target >= 99.5%).
4. Scale: `--scale-records` (default 1,000,000) source records, each pipeline in a fresh
   subprocess: `stagecoach` materialises the identity asset with Dagster (`dg.materialize`,
   DuckDB warehouse) and `splink` runs splink's documented example pipeline (the "deduplicate
   50k synthetic" tutorial's steps: settings with its comparisons and blocking rules, the prior
   from deterministic rules, u by random sampling, EM over two blocking rules, predict, then
   `cluster_pairwise_predictions_at_threshold`) on the same records in DuckDB. Wall time of the
   whole subprocess and its peak RSS (`ru_maxrss` of the reaped child, from os.wait4). Both
   use splink's blocking rules of the example (SCALE_SPEC); Stagecoach adds its exact layer,
   the household rule, stable ids, survivorship, the review pairs and reading and writing the
   warehouse.

The exit code is 0 whatever the verdicts (a report); 1 only when a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.identity.nicknames import GROUPS  # noqa: E402  (after the path insert)
from assets.spec import IdentityResolution  # noqa: E402

SOURCES = {"web": 0.70, "loyalty": 0.55, "crm": 0.40}
GIVEN = sorted({*GROUPS, "olivia", "noah", "emma", "liam", "ava", "ethan", "mia", "lucas",
                "zoe", "owen", "sofia", "mateo", "chloe", "leo", "grace", "isaac", "nora",
                "hugo", "ines", "omar", "yusuf", "amara", "kenji", "priya", "arjun", "mei",
                "lena", "felix", "clara", "jonas", "marta", "pablo", "lucia", "diego", "elena",
                "ivan", "olga", "anna", "paul", "rosa", "hannah", "adam", "sara", "ali", "fatima",
                "chen", "wei", "hiro", "yuki", "aisha", "kofi", "ama", "tariq", "layla", "ruth",
                "simon", "peter", "carl", "dora", "frank", "gloria", "harold", "irene", "jacob",
                "karen", "louis", "monica", "nathan", "oscar", "phoebe", "quentin", "rachel",
                "sean", "tina", "ursula", "victor", "wanda", "xavier", "yvonne", "zach"})
_SYL = ["an", "ber", "cal", "dor", "el", "fin", "gar", "hol", "is", "jen", "kar", "lin", "mor",
        "nel", "ost", "par", "quin", "ros", "sten", "tor", "ul", "van", "wes", "yor", "zel",
        "ham", "ley", "son", "ton", "wood", "field", "man", "ford", "berg", "ski", "ez", "ov"]
DOMAINS = ["example.com", "mail.example.org", "shop.example.net", "post.example.de"]
SPEC = {
    "sources": {s: {"key": "record_id", "updated_at": "updated_at"} for s in SOURCES},
    "fields": {"email": "email", "phone": "phone", "first_name": "given_name",
               "last_name": "surname", "birth_date": "birthdate", "postal_code": "postal_code"},
    "exact_rules": [
        {"name": "same_email", "columns": ["email"]},
        {"name": "same_phone_and_first_name", "columns": ["phone", "first_name"]},
        {"name": "same_name_birth_date_postal_code",
         "columns": ["first_name", "last_name", "birth_date", "postal_code"]},
    ],
    "probabilistic": {
        "blocking_rules": [["email"], ["phone"], ["last_name", "birth_date"],
                           ["first_name", "birth_date"], ["first_name", "postal_code"],
                           ["last_name", "postal_code"]],
        "threshold": 0.95,
        # Two EM passes, as splink's example has: every comparison is trained in one of them.
        "training": {"em_blocking_rules": [["email"], ["last_name", "birth_date"]]},
    },
    "survivorship": {"email": "most_recent", "first_name": "most_frequent"},
    "checks": {"max_cluster_size": 20, "min_stability": "99.5%"},
    "review_pairs": 1000,
}

# The scale run compares like with like: the same blocking rules as splink's example pipeline
# (the comparisons already are the same, by role), on top of Stagecoach's exact layer.
SCALE_SPEC = {**SPEC, "probabilistic": {**SPEC["probabilistic"], "blocking_rules": [
    ["first_name", "last_name"], ["last_name", "birth_date"], ["email"], ["phone"],
    ["postal_code", "first_name"]]}}


# ---------------------------------------------------------------- population


def surnames(n: int, rng: random.Random) -> list[str]:
    found: set[str] = set()
    while len(found) < n:
        found.add("".join(rng.choice(_SYL) for _ in range(rng.choice((2, 2, 3)))))
    return sorted(found)


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 3:
        return word
    i = rng.randrange(len(word) - 1)
    kind = rng.random()
    if kind < 0.5:  # adjacent transposition
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.75:  # a letter dropped
        return word[:i] + word[i + 1:]
    return word[:i] + rng.choice("aeioulnrst") + word[i + 1:]  # a letter replaced


class Population:
    """People (truth) and the source records written from them."""

    def __init__(self, people: int, seed: int = 20261207):
        self.rng = random.Random(seed)
        self.family = surnames(max(2000, people // 40), self.rng)
        self.people: list[dict] = []
        self.next_record = 0
        while len(self.people) < people:
            self._household()
        self.people = self.people[:people]

    def _household(self) -> None:
        rng = self.rng
        size = rng.choices((1, 2, 3, 4), (0.45, 0.3, 0.15, 0.10))[0]
        surname = rng.choice(self.family)
        phone = f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        postal = f"{rng.randint(1001, 99950):05d}"
        shared_email = (f"{surname}.family{rng.randint(1, 999)}@{rng.choice(DOMAINS)}"
                        if size > 1 and rng.random() < 0.1 else None)
        base_year = rng.randint(1940, 1985)
        for member in range(size):
            pid = len(self.people)
            given = rng.choice(GIVEN)
            born = date(base_year if member < 2 else rng.randint(base_year + 18, 2008),
                        rng.randint(1, 12), rng.randint(1, 28))
            own_phone = (f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}"
                         f"{rng.randint(0, 9999):04d}")
            self.people.append({
                "pid": pid, "given": given,
                "surname": surname if rng.random() < 0.9 else rng.choice(self.family),
                "born": born, "postal": postal,
                "phone": phone if size > 1 and rng.random() < 0.6 else own_phone,
                "email": shared_email if shared_email and rng.random() < 0.5 else
                f"{given}.{surname}{pid}@{rng.choice(DOMAINS)}",
            })

    def record(self, person: dict) -> dict:
        """One source record of a person, corrupted the way real files are."""
        rng = self.rng
        given, surname = person["given"], person["surname"]
        if rng.random() < 0.10 and given in GROUPS:
            given = rng.choice(GROUPS[given])
        if rng.random() < 0.05:
            given = _typo(rng, given)
        if rng.random() < 0.05:
            surname = _typo(rng, surname)
        if rng.random() < 0.02:
            given, surname = surname, given
        roll = rng.random()
        email = (None if roll < 0.10 else
                 # a new mailbox of this person's (an address is one mailbox's)
                 f"{given}.{person['pid']}x{rng.randint(1, 999)}@{rng.choice(DOMAINS)}"
                 if roll < 0.20 else
                 person["email"])
        roll = rng.random()
        phone = None if roll < 0.10 else person["phone"]
        postal = person["postal"] if rng.random() < 0.9 else f"{rng.randint(1001, 99950):05d}"
        born: date | None = person["born"]
        roll = rng.random()
        if roll < 0.05:
            born = None
        elif roll < 0.07 and born is not None and born.day <= 12:
            born = date(born.year, born.day, born.month)
        self.next_record += 1
        return {"record_id": f"R{self.next_record:09d}", "pid": person["pid"],
                "email": email, "phone": phone, "first_name": given.title(),
                "last_name": surname.title(), "birth_date": born, "postal_code": postal,
                "updated_at": datetime(2020, 1, 1) + timedelta(minutes=rng.randint(0, 2_500_000))}

    def sources(self) -> dict[str, list[dict]]:
        rng = self.rng
        out: dict[str, list[dict]] = {s: [] for s in SOURCES}
        for person in self.people:
            chosen = [s for s, p in SOURCES.items() if rng.random() < p] or [
                rng.choice(list(SOURCES))]
            for source in chosen:
                out[source].append(self.record(person))
            if "web" in chosen and rng.random() < 0.03:
                out["web"].append(self.record(person))
        return out


def population_for_records(records: int) -> int:
    """People giving about `records` source records (1.68 records a person)."""
    return int(records / 1.68)


def to_arrow(rows: list[dict]) -> pa.Table:
    return pa.table({
        "record_id": pa.array([r["record_id"] for r in rows], pa.string()),
        "pid": pa.array([r["pid"] for r in rows], pa.int64()),
        **{c: pa.array([r[c] for r in rows], pa.string())
           for c in ("email", "phone", "first_name", "last_name", "postal_code")},
        "birth_date": pa.array([r["birth_date"] for r in rows], pa.date32()),
        "updated_at": pa.array([r["updated_at"] for r in rows], pa.timestamp("us")),
    })


def write_warehouse(path: Path, sources: dict[str, list[dict]]) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS domain")
        for name, rows in sources.items():
            con.register("rows", to_arrow(rows))
            con.execute(f"CREATE OR REPLACE TABLE domain.{name} AS SELECT * FROM rows")
            con.unregister("rows")


# ---------------------------------------------------------------- quality


def evaluate(warehouse: Path, map_table: str) -> dict[str, float]:
    """Pairwise and cluster precision/recall/F1 of a map against the truth (pid)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        union = " UNION ALL ".join(f"SELECT '{s}' AS source_table, record_id, pid FROM domain.{s}"
                                   for s in SOURCES)
        con.execute(f"""CREATE TEMP TABLE j AS SELECT t.pid, m.customer_id FROM ({union}) t
            JOIN identity.{map_table} m ON m.source_table = t.source_table
            AND m.source_key = t.record_id""")
        tp, predicted, true = con.execute("""SELECT
            (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM j GROUP BY pid, customer_id)),
            (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM j GROUP BY customer_id)),
            (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM j GROUP BY pid))
            """).fetchall()[0]
        exact, clusters, people = con.execute("""
            WITH c AS (SELECT customer_id, count(*) n, min(pid) lo, max(pid) hi FROM j
                       GROUP BY customer_id),
                 t AS (SELECT pid, count(*) n FROM j GROUP BY pid)
            SELECT (SELECT count(*) FROM c JOIN t ON c.lo = t.pid WHERE c.lo = c.hi
                    AND c.n = t.n), (SELECT count(*) FROM c), (SELECT count(*) FROM t)
            """).fetchall()[0]
    p = float(tp) / float(predicted) if predicted else 1.0
    r = float(tp) / float(true) if true else 1.0
    cp, cr = exact / clusters, exact / people
    return {"pair_precision": p, "pair_recall": r, "pair_f1": 2 * p * r / (p + r) if p + r else 0,
            "cluster_precision": cp, "cluster_recall": cr,
            "cluster_f1": 2 * cp * cr / (cp + cr) if cp + cr else 0,
            "true_pairs": int(true), "predicted_pairs": int(predicted)}


def resolve_in(warehouse: Path, spec: dict, name: str, run_id: str = "bench") -> dict:
    from assets.identity.asset import run_resolution
    from assets.names import identity_tables
    from resources.warehouse import WarehouseResource

    resource = WarehouseResource(url=f"duckdb:///{warehouse}", duckdb_memory_limit="2GB")
    ident = IdentityResolution.model_validate(spec)
    started = time.perf_counter()
    result = run_resolution(resource, ident, identity_tables(name), run_id)
    stats = {k: v for k, v in result.stats.items() if k != "splink_model"}
    return stats | {"seconds": time.perf_counter() - started}


def quality(people: int, workdir: Path) -> dict:
    pop = Population(people)
    sources = pop.sources()
    warehouse = workdir / "quality.duckdb"
    warehouse.unlink(missing_ok=True)
    write_warehouse(warehouse, sources)
    records = sum(map(len, sources.values()))
    print(f"quality: {people:,} people, {records:,} source records "
          f"({', '.join(f'{s} {len(r):,}' for s, r in sources.items())})", flush=True)
    exact_spec = {k: v for k, v in SPEC.items() if k != "probabilistic"}
    out = {}
    for label, spec, name in (("exact layer", exact_spec, "exact"),
                              ("exact + splink", SPEC, "full")):
        stats = resolve_in(warehouse, spec, name)
        scores = evaluate(warehouse, f"{name}_map")
        out[label] = scores | {"seconds": stats["seconds"],
                               "household_rule_refused": stats["household_rule_refused"]}
        print(f"  {label:15s} pairs P {scores['pair_precision']:.4f} R "
              f"{scores['pair_recall']:.4f} F1 {scores['pair_f1']:.4f} | clusters P "
              f"{scores['cluster_precision']:.4f} R {scores['cluster_recall']:.4f} F1 "
              f"{scores['cluster_f1']:.4f} | {stats['seconds']:.1f} s", flush=True)
    full, exact = out["exact + splink"], out["exact layer"]
    print(f"  targets: pairwise F1 with splink {full['pair_f1']:.4f} >= 0.95: "
          f"{'PASS' if full['pair_f1'] >= 0.95 else 'FAIL'}; exact-layer precision "
          f"{exact['pair_precision']:.4f} >= 0.99: "
          f"{'PASS' if exact['pair_precision'] >= 0.99 else 'FAIL'}")
    return out


# ---------------------------------------------------------------- stability


def stability(people: int, workdir: Path) -> dict:
    pop = Population(people, seed=7)
    sources = pop.sources()
    warehouse = workdir / "stability.duckdb"
    warehouse.unlink(missing_ok=True)
    write_warehouse(warehouse, sources)
    first = resolve_in(warehouse, SPEC, "stable", "run-1")
    rng = random.Random(11)
    records = sum(map(len, sources.values()))
    # 1% changed: a new e-mail, a move or a new phone on existing records.
    for _ in range(records // 100):
        source = rng.choice(list(SOURCES))
        row = rng.choice(sources[source])
        change = rng.random()
        if change < 1 / 3:
            row["email"] = f"{row['first_name'].lower()}{rng.randint(1, 99999)}@example.com"
        elif change < 2 / 3:
            row["postal_code"] = f"{rng.randint(1001, 99950):05d}"
        else:
            row["phone"] = f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}" \
                           f"{rng.randint(0, 9999):04d}"
    # 1% new: half new people (new households), half new records of known people.
    newcomers = Population(max(1, records // 200), seed=99)
    for person in newcomers.people:
        person["pid"] += 10_000_000
    for n in range(records // 100):
        person = (newcomers.people[n // 2 % len(newcomers.people)] if n % 2 else
                  rng.choice(pop.people))
        pop.next_record = 900_000_000 + n
        sources[rng.choice(list(SOURCES))].append(pop.record(person))
    write_warehouse(warehouse, sources)
    second = resolve_in(warehouse, SPEC, "stable", "run-2")
    rate = second["stability"]
    print(f"stability: {records:,} records, then +1% new and 1% changed: {rate:.4%} of "
          f"{second['previous_records']:,} records kept their id ({second['ids_merged']} ids "
          f"merged, {second['ids_split']} split, {second['ids_new']} new) >= 99.5%: "
          f"{'PASS' if rate >= 0.995 else 'FAIL'}", flush=True)
    return {"first_seconds": first["seconds"], **second}


# ---------------------------------------------------------------- scale


STAGECOACH_CHILD = """
import sys, time, json
sys.path.insert(0, {root!r})
import dagster as dg
from assets import spec as s
from assets.identity.asset import build_identity_asset
from resources.warehouse import WarehouseResource
started = time.perf_counter()
ident = s.IdentityResolution.model_validate(json.loads({spec!r}))
workflow = s.Workflow(workflow=s.WorkflowInfo(name="bench"), identity={{"people": ident}})
asset = build_identity_asset(workflow, "people", ident)
result = dg.materialize([asset], resources={{"warehouse": WarehouseResource(
    url="duckdb:///{warehouse}", duckdb_memory_limit="2GB")}},
    run_config={{"loggers": {{"console": {{"config": {{"log_level": "ERROR"}}}}}}}})
assert result.success
print(json.dumps({{"seconds": time.perf_counter() - started}}))
"""

SPLINK_CHILD = """
import sys, time, json
import duckdb
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
started = time.perf_counter()
con = duckdb.connect()
con.execute("SET memory_limit = '2GB'")
con.execute("ATTACH '{warehouse}' AS w (READ_ONLY)")
con.execute('''CREATE TABLE df AS SELECT row_number() OVER () AS unique_id, *
    FROM (SELECT * FROM w.domain.web UNION ALL SELECT * FROM w.domain.loyalty
          UNION ALL SELECT * FROM w.domain.crm)''')
db_api = DuckDBAPI(connection=con)
settings = SettingsCreator(
    link_type="dedupe_only",
    blocking_rules_to_generate_predictions=[
        block_on("first_name", "last_name"), block_on("last_name", "birth_date"),
        block_on("email"), block_on("phone"), block_on("postal_code", "first_name")],
    comparisons=[
        cl.ForenameSurnameComparison("first_name", "last_name"),
        cl.DateOfBirthComparison("birth_date", input_is_string=False),
        cl.LevenshteinAtThresholds("postal_code", [1]),
        cl.EmailComparison("email"),
        cl.LevenshteinAtThresholds("phone", [1]),
    ],
    retain_intermediate_calculation_columns=False)
linker = Linker("df", settings, db_api=db_api, set_up_basic_logging=False)
linker.training.estimate_probability_two_random_records_match(
    [block_on("first_name", "last_name", "birth_date"), block_on("email")], recall=0.7)
linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
linker.training.estimate_parameters_using_expectation_maximisation(block_on("email"))
linker.training.estimate_parameters_using_expectation_maximisation(
    block_on("last_name", "birth_date"))
predictions = linker.inference.predict(threshold_match_probability=0.5)
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
    predictions, threshold_match_probability=0.95)
n = con.execute(f"SELECT count(DISTINCT cluster_id) FROM {{clusters.physical_name}}").fetchall()
print(json.dumps({{"seconds": time.perf_counter() - started, "clusters": n[0][0]}}))
"""


def _run_child(code: str) -> dict:
    """A fresh interpreter; wall time of the whole process and its own peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT)
    # Read the pipes on threads so the child never blocks, then reap it with wait4 for its
    # own rusage (peak RSS of that child alone).
    import threading

    chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, p=p: chunks.__setitem__(n, p.read()))
               for n, p in (("out", child.stdout), ("err", child.stderr))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(child.pid, 0)
    for t in readers:
        t.join()
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"child failed:\n{chunks.get('err', b'').decode()[-3000:]}")
    # The figures are the last JSON line (a library may print its own lines before it).
    [line] = [x for x in chunks["out"].decode().splitlines() if x.startswith("{")][-1:]
    inner = json.loads(line)
    return inner | {"wall": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
                    "cpu": usage.ru_utime + usage.ru_stime}


def scale(records: int, workdir: Path) -> dict:
    people = population_for_records(records)
    pop = Population(people, seed=3)
    sources = pop.sources()
    warehouse = workdir / "scale.duckdb"
    warehouse.unlink(missing_ok=True)
    write_warehouse(warehouse, sources)
    total = sum(map(len, sources.values()))
    del pop, sources
    print(f"scale: {total:,} source records ({people:,} people)", flush=True)
    results = {}
    for label, code in (
            ("splink example", SPLINK_CHILD.format(warehouse=str(warehouse))),
            ("stagecoach", STAGECOACH_CHILD.format(root=str(ROOT), spec=json.dumps(SCALE_SPEC),
                                                   warehouse=str(warehouse)))):
        results[label] = _run_child(code)
        r = results[label]
        print(f"  {label:15s} wall {r['wall']:7.1f} s  cpu {r['cpu']:7.1f} s  peak RSS "
              f"{r['peak_rss_mib']:7.0f} MiB", flush=True)
    ratio = results["stagecoach"]["wall"] / results["splink example"]["wall"]
    rss = results["stagecoach"]["peak_rss_mib"] / results["splink example"]["peak_rss_mib"]
    print(f"  stagecoach / splink example: wall x{ratio:.2f}, peak RSS x{rss:.2f}")
    return {"records": total, **{k: {kk: vv for kk, vv in v.items()} for k, v in
                                 results.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--stability-people", type=int, default=200_000)
    parser.add_argument("--scale-records", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["quality", "stability", "scale"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir())
                        / "stagecoach-identity-bench")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    figures = {}
    if args.only in (None, "quality"):
        figures["quality"] = quality(args.people, args.workdir)
    if args.only in (None, "stability"):
        figures["stability"] = stability(args.stability_people, args.workdir)
    if args.only in (None, "scale"):
        figures["scale"] = scale(args.scale_records, args.workdir)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
