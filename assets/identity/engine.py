"""Identity resolution itself, on a DuckDB connection, with no Dagster in it.

Source records become one table; an exact layer links records equal on a rule's fields (each
pair explained by the rule's name), splink scores the pairs its blocking rules bring together,
the links make clusters (connected components), and each cluster gets a customer id that
survives from the previous run when the cluster does. The asset (assets/identity/asset.py)
feeds it from the warehouse and writes its tables back; the benchmark calls it directly.

The household rule: an e-mail, phone, surname or address is shared by the people of a household.
Where the value of an exact rule that compares such fields is held by records whose given
names or birth dates disagree, the rule also needs the same given name (nicknames count as the
same: `Bob` = `Robert`) and the same birth date, and says so in the pair's rule name. A splink
pair whose given names disagree (not equal, not nicknames of each other, not close spellings,
not swapped with the surname, not an initial) or whose birth dates disagree (more than a year
and more than one typo apart) never merges, whatever its score.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from assets.identity.nicknames import NICKNAMES
from assets.spec import HOUSEHOLD_ROLES, IdentityResolution

RECORDS = "id_records"  # rid, source_table, source_key, src_rank, updated_at, <fields>
PREVIOUS = "id_prev"  # the previous run's map: source_table, source_key, customer_id, customer_seq
_CMP = "id_cmp"  # rid and each field in its compared form (lower case, canonical given name)
_TEXT_TYPES = {"birthdate": "DATE"}  # every other role is compared as text
_SPLINK_LOGGERS = ("splink",)
GIVEN_NAME_SIMILARITY = 0.88  # Jaro-Winkler at which two given names are close spellings
SEQ_DIGITS = 10


@dataclass
class Resolution:
    """The tables a run writes and the figures its materialization shows."""

    map: pa.Table
    customers: pa.Table
    pairs: pa.Table
    id_changes: pa.Table
    stats: dict[str, Any] = field(default_factory=dict)
    biggest: list[dict[str, Any]] = field(default_factory=list)
    cluster_sizes: dict[str, int] = field(default_factory=dict)


def customer_id(prefix: str, seq: int) -> str:
    """`SC0000000042`: the prefix and a zero-padded sequence number (older ids are smaller)."""
    return f"{prefix}{seq:0{SEQ_DIGITS}d}"


def record_columns(ident: IdentityResolution) -> dict[str, str]:
    """The columns of the records table after the bookkeeping ones: field → SQL type."""
    return {f: _TEXT_TYPES.get(role, "VARCHAR") for f, role in ident.fields.items()}


def prepare_records(con: duckdb.DuckDBPyConnection, ident: IdentityResolution,
                    tables: dict[str, pa.Table]) -> int:
    """One records table from each source's rows (source_key, updated_at and the fields,
    as `source_select` reads them); returns the record count. Record ids follow (source order,
    key) so the same input always gives the same ids."""
    parts = []
    for rank, source in enumerate(ident.sources):
        name = f"id_source_{rank}"
        con.register(name, tables[source])
        casts = ", ".join(f'CAST("{f}" AS {t}) AS "{f}"' for f, t in record_columns(ident).items())
        parts.append(f"SELECT '{source}' AS source_table, CAST(source_key AS VARCHAR) AS "
                     f"source_key, {rank} AS src_rank, CAST(updated_at AS TIMESTAMP) AS "
                     f"updated_at, {casts} FROM {name}")
    con.execute(f"CREATE OR REPLACE TABLE {RECORDS} AS SELECT (row_number() OVER (ORDER BY "
                f"src_rank, source_key) - 1)::BIGINT AS rid, * FROM ({' UNION ALL '.join(parts)})")
    for rank in range(len(ident.sources)):
        con.unregister(f"id_source_{rank}")
    return con.execute(f"SELECT count(*) FROM {RECORDS}").fetchall()[0][0]


def set_previous(con: duckdb.DuckDBPyConnection, previous: pa.Table | None) -> None:
    """The previous run's map (source_table, source_key, customer_id, customer_seq), or none."""
    empty = pa.table({"source_table": pa.array([], pa.string()),
                      "source_key": pa.array([], pa.string()),
                      "customer_id": pa.array([], pa.string()),
                      "customer_seq": pa.array([], pa.int64())})
    con.register("id_prev_arrow", previous if previous is not None else empty)
    con.execute(f"CREATE OR REPLACE TABLE {PREVIOUS} AS SELECT CAST(source_table AS VARCHAR) "
                "AS source_table, CAST(source_key AS VARCHAR) AS source_key, CAST(customer_id "
                "AS VARCHAR) AS customer_id, CAST(customer_seq AS BIGINT) AS customer_seq "
                "FROM id_prev_arrow")
    con.unregister("id_prev_arrow")


def source_select(ident: IdentityResolution, source: str, quote: Any) -> str:
    """The SELECT reading one source's records from the warehouse (portable SQL)."""
    item = ident.sources[source]
    keys = [item.key] if isinstance(item.key, str) else item.key
    key = (quote(keys[0]) if len(keys) == 1 else
           " || '|' || ".join(f"CAST({quote(k)} AS TEXT)" for k in keys))
    cols = [f"CAST({key} AS TEXT) AS source_key",
            f"{quote(item.updated_at) if item.updated_at else 'NULL'} AS updated_at"]
    for f in ident.fields:
        column = ident.source_column(source, f)
        cols.append(f"{quote(column) if column else 'NULL'} AS {quote(f)}")
    return f"SELECT {', '.join(cols)} FROM {quote('domain')}.{quote(source)}"


def resolve(con: duckdb.DuckDBPyConnection, ident: IdentityResolution, *, max_seq: int = 0,
            run_id: str = "", now: datetime | None = None) -> Resolution:
    """Resolve the records in `id_records` against the previous map in `id_prev` (may be
    empty): the run's tables and figures. `max_seq` is the highest sequence number ever
    issued (retired ones included), so no id is ever handed out twice."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    con.execute("DROP TABLE IF EXISTS id_scored")
    _comparable(con, ident)
    stats: dict[str, Any] = {"records": _count(con, RECORDS)}
    exact = _exact_edges(con, ident)
    stats["exact_links"] = _count(con, "id_exact")
    stats["splink_pairs_scored"] = stats["splink_links"] = stats["household_rule_refused"] = 0
    if ident.probabilistic is not None:
        stats |= _splink(con, ident)
    labels = _components(con, stats["records"], exact)
    con.register("id_labels", pa.table({"rid": np.arange(len(labels), dtype=np.int64),
                                        "cluster": labels}))
    con.execute("CREATE OR REPLACE TABLE id_clusters AS SELECT * FROM id_labels")
    con.unregister("id_labels")
    changes = _assign_ids(con, ident, max_seq, run_id, now, stats)
    sizes = con.execute("SELECT n, count(*) FROM (SELECT count(*) n FROM id_clusters GROUP BY "
                        "cluster) GROUP BY n ORDER BY n").fetchall()
    stats["customers"] = sum(c for _, c in sizes)
    stats["match_rate"] = (sum(n * c for n, c in sizes if n > 1) / stats["records"]
                           if stats["records"] else 0.0)
    stats["largest_cluster"] = max((n for n, _ in sizes), default=0)
    buckets = {"1": 0, "2": 0, "3": 0, "4": 0, "5-9": 0, "10+": 0}
    for n, c in sizes:
        buckets[str(n) if n < 5 else "5-9" if n < 10 else "10+"] += c
    map_table = con.sql(
        f"SELECT r.source_table, r.source_key, i.customer_id, i.customer_seq, "
        f"CAST($now AS TIMESTAMP) AS resolved_at FROM {RECORDS} r JOIN id_ids i USING (rid) "
        f"ORDER BY r.rid", params={"now": now}).to_arrow_table()
    return Resolution(map=map_table, customers=_unified(con, ident, now),
                      pairs=_pairs(con, ident), id_changes=changes, stats=stats,
                      biggest=_biggest(con, ident), cluster_sizes=buckets)


# ---------------------------------------------------------------- compared forms


def _comparable(con: duckdb.DuckDBPyConnection, ident: IdentityResolution) -> None:
    """id_cmp: text fields trimmed and lower-cased, given names by their canonical form."""
    con.register("id_nick_arrow", pa.table({"nick": list(NICKNAMES),
                                            "canonical": list(NICKNAMES.values())}))
    con.execute("CREATE OR REPLACE TABLE id_nicknames AS SELECT * FROM id_nick_arrow")
    con.unregister("id_nick_arrow")
    cols = []
    for f, role in ident.fields.items():
        if role == "birthdate":
            cols.append(f'r."{f}"')
        elif role == "given_name":
            cols.append(f"""(SELECT coalesce(max(canonical), nullif(lower(trim(r."{f}")), ''))
                           FROM id_nicknames WHERE nick = lower(trim(r."{f}"))) AS "{f}\"""")
        else:
            cols.append(f'nullif(lower(trim(r."{f}")), \'\') AS "{f}"')
    con.execute(f"CREATE OR REPLACE TABLE {_CMP} AS SELECT r.rid, {', '.join(cols)} "
                f"FROM {RECORDS} r")


def person_fields(ident: IdentityResolution) -> list[str]:
    """The fields that tell a household's people apart: the first given name (else full name)
    field and the first birth date field."""
    found = []
    for roles in (("given_name", "full_name"), ("birthdate",)):
        for role in roles:
            match = [f for f, r in ident.fields.items() if r == role]
            if match:
                found.append(match[0])
                break
    return found


def guards(ident: IdentityResolution, columns: list[str]) -> list[str]:
    """The household rule for an exact rule: the person fields a record must also share where
    the rule's value is shared ([] when the rule compares no household value)."""
    if not {ident.fields[c] for c in columns} & HOUSEHOLD_ROLES:
        return []
    return [f for f in person_fields(ident) if f not in columns]


# ---------------------------------------------------------------- exact layer


def _exact_edges(con: duckdb.DuckDBPyConnection, ident: IdentityResolution) -> str:
    """id_exact(rid_l, rid_r, rule): each record linked to the first record of its rule
    group (a star per group: as many links as records, not pairs).

    Where a rule's value (all its fields together) is held by records whose person fields
    disagree (two given names, two birth dates), it is shared: records then also need the same
    given name (not missing) and the same birth date (a missing one matches a missing one) to
    be linked by it."""
    parts = []
    for rule in ident.exact_rules:
        cols = [f'"{c}"' for c in rule.columns]
        present = " AND ".join(f"{c} IS NOT NULL" for c in cols)
        extra = guards(ident, rule.columns)
        if extra:
            people = [f'"{g}"' for g in extra]
            # A missing birth date matches only a missing one; a name must be there.
            needed = [f'"{g}"' for g in extra if ident.fields[g] != "birthdate"]
            shared = " OR ".join(f"count(DISTINCT {g}) > 1" for g in people)
            key = [*cols, *(f"CASE WHEN shared THEN coalesce(CAST({g} AS VARCHAR), '') "
                            "ELSE '' END" for g in people)]
            source = (f"(SELECT c.*, s.shared FROM (SELECT * FROM {_CMP} WHERE {present}) c "
                      f"JOIN (SELECT {', '.join(cols)}, {shared} AS shared FROM {_CMP} WHERE "
                      f"{present} GROUP BY ALL) s USING ({', '.join(cols)})) WHERE NOT shared "
                      f"OR ({' AND '.join(f'{g} IS NOT NULL' for g in needed) or 'true'})")
            label = (f"CASE WHEN shared THEN '{rule.name} + {', '.join(extra)} (shared value)' "
                     f"ELSE '{rule.name}' END")
        else:
            key, source, label = cols, f"(SELECT * FROM {_CMP} WHERE {present})", f"'{rule.name}'"
        parts.append(f"SELECT min(rid) OVER (PARTITION BY {', '.join(key)}) AS rid_l, rid AS "
                     f"rid_r, {label} AS rule FROM {source}")
    body = " UNION ALL ".join(parts) if parts else (
        "SELECT NULL::BIGINT AS rid_l, NULL::BIGINT AS rid_r, NULL::VARCHAR AS rule WHERE false")
    con.execute(f"CREATE OR REPLACE TABLE id_exact AS SELECT rid_l, rid_r, min(rule) AS rule "
                f"FROM ({body}) WHERE rid_l <> rid_r GROUP BY rid_l, rid_r")
    return "id_exact"


# ---------------------------------------------------------------- splink layer


def comparisons(ident: IdentityResolution) -> list:
    """Splink comparisons by role: names together when both are given (a swapped given name
    and surname still match), e-mails by splink's e-mail comparison, dates of birth by
    splink's, phones and postal codes within one edit, the rest exact."""
    import splink.comparison_library as cl

    by_role: dict[str, list[str]] = {}
    for f, role in ident.fields.items():
        by_role.setdefault(role, []).append(f)
    found: list = []
    given, surnames = by_role.pop("given_name", []), by_role.pop("surname", [])
    if given and surnames:
        found.append(cl.ForenameSurnameComparison(given[0], surnames[0]))
        given, surnames = given[1:], surnames[1:]
    found += [cl.NameComparison(f) for f in given + surnames]
    for role, names in by_role.items():
        for f in names:
            if role == "email":
                found.append(cl.EmailComparison(f))
            elif role == "birthdate":
                found.append(cl.DateOfBirthComparison(f, input_is_string=False))
            elif role in ("phone", "postal_code"):
                found.append(cl.LevenshteinAtThresholds(f, [1]))
            elif role in ("full_name", "address"):
                found.append(cl.JaroWinklerAtThresholds(f, [0.92, 0.8]))
            else:
                found.append(cl.ExactMatch(f))
    return found


def splink_settings(ident: IdentityResolution) -> Any:
    """Splink's settings for this resolution: dedupe across all sources at once."""
    from splink import SettingsCreator, block_on

    assert ident.probabilistic is not None  # only called when splink is on
    return SettingsCreator(
        link_type="dedupe_only", unique_id_column_name="rid",
        comparisons=comparisons(ident),
        blocking_rules_to_generate_predictions=[
            block_on(*rule) for rule in ident.probabilistic.blocking_rules],
        retain_intermediate_calculation_columns=False, retain_matching_columns=False)


def _splink(con: duckdb.DuckDBPyConnection, ident: IdentityResolution) -> dict[str, Any]:
    """id_scored(rid_l, rid_r, match_probability, match_weight, merged): splink's pairs at or
    above the review floor; `merged` when at the threshold and allowed by the household rule."""
    from splink import DuckDBAPI, Linker, block_on

    prob = ident.probabilistic
    assert prob is not None
    for name in _SPLINK_LOGGERS:  # splink logs every step, and untrained levels as warnings
        logging.getLogger(name).setLevel(logging.ERROR)
    db_api = DuckDBAPI(connection=con)
    training = prob.training
    skipped: list[str] = []
    if training.method == "given":
        assert training.model_file is not None  # the spec check demands one
        linker = Linker(_CMP, training.model_file, db_api=db_api, set_up_basic_logging=False)
    else:
        linker = Linker(_CMP, splink_settings(ident), db_api=db_api,
                        set_up_basic_logging=False)
        rules: list[Any] = [  # splink's List[str | BlockingRuleCreator], which it does not export
            block_on(*r.columns) for r in ident.exact_rules] or [
            block_on(*r) for r in prob.blocking_rules]
        linker.training.estimate_probability_two_random_records_match(rules,
                                                                      recall=training.recall)
        linker.training.estimate_u_using_random_sampling(max_pairs=training.max_pairs,
                                                         seed=training.seed)
        for rule in training.em_blocking_rules or prob.blocking_rules:
            if not _any_pair_agrees(con, rule):  # splink's EM would refuse it: others train
                skipped.append(" + ".join(rule))
                continue
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*rule))
    predictions = linker.inference.predict(threshold_match_probability=min(
        prob.review_floor, prob.threshold))
    refused = _household_refusal(ident)
    con.execute(f"""CREATE OR REPLACE TABLE id_scored AS
        SELECT p.rid_l, p.rid_r, p.match_probability, p.match_weight,
               p.match_probability >= {prob.threshold} AND NOT ({refused}) AS merged,
               p.match_probability >= {prob.threshold} AND ({refused}) AS refused
        FROM {predictions.physical_name} p
        JOIN {_CMP} l ON l.rid = p.rid_l JOIN {_CMP} r ON r.rid = p.rid_r""")
    predictions.drop_table_from_database_and_remove_from_cache()
    counts = con.execute("SELECT count(*), count(*) FILTER (WHERE merged), "
                         "count(*) FILTER (WHERE refused) FROM id_scored").fetchall()[0]
    assert counts is not None
    return {"splink_pairs_scored": counts[0], "splink_links": counts[1],
            "household_rule_refused": counts[2], "em_passes_skipped": skipped,
            "splink_model": linker.misc.save_model_to_json()}


def _any_pair_agrees(con: duckdb.DuckDBPyConnection, columns: list[str]) -> bool:
    """Whether two records agree on every column of a blocking rule: splink's EM pass needs
    one such pair (it raises an exception it does not export otherwise)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    present = " AND ".join(f'"{c}" IS NOT NULL' for c in columns)
    return con.execute(f"SELECT 1 FROM {_CMP} WHERE {present} GROUP BY {cols} "
                       "HAVING count(*) > 1 LIMIT 1").fetchall() != []


def _household_refusal(ident: IdentityResolution) -> str:
    """SQL over l and r: true when the two records' given names disagree, or their birth dates
    do (both known, more than a year apart, and not one typo or a day/month swap apart): two
    people of one household, however much else they share."""
    found = []
    given = [f for f, role in ident.fields.items() if role == "given_name"]
    if given:
        g = f'"{given[0]}"'
        surnames = [f for f, role in ident.fields.items() if role == "surname"]
        swapped = (f'(l.{g} = r."{surnames[0]}" AND l."{surnames[0]}" = r.{g}) OR '
                   if surnames else "")
        found.append(
            f"(l.{g} IS NOT NULL AND r.{g} IS NOT NULL AND l.{g} <> r.{g} AND NOT ("
            f"{swapped}jaro_winkler_similarity(l.{g}, r.{g}) >= {GIVEN_NAME_SIMILARITY} OR "
            f"((length(l.{g}) = 1 OR length(r.{g}) = 1) AND left(l.{g}, 1) = left(r.{g}, 1))))")
    born = [f for f, role in ident.fields.items() if role == "birthdate"]
    if born:
        b = f'"{born[0]}"'
        found.append(
            f"(l.{b} IS NOT NULL AND r.{b} IS NOT NULL AND abs(l.{b} - r.{b}) > 366 AND "
            f"damerau_levenshtein(CAST(l.{b} AS VARCHAR), CAST(r.{b} AS VARCHAR)) > 1 AND NOT "
            f"(year(l.{b}) = year(r.{b}) AND month(l.{b}) = day(r.{b}) AND "
            f"day(l.{b}) = month(r.{b})))")
    return " OR ".join(found) or "false"


# ---------------------------------------------------------------- clusters


def _components(con: duckdb.DuckDBPyConnection, n: int, exact: str) -> np.ndarray:
    """Each record's cluster: the smallest record id connected to it by merged links."""
    sql = f"SELECT rid_l, rid_r FROM {exact}"
    if _exists(con, "id_scored"):
        sql += " UNION ALL SELECT rid_l, rid_r FROM id_scored WHERE merged"
    edges = con.sql(sql).to_arrow_table()
    left = edges.column(0).to_numpy().astype(np.int64)
    right = edges.column(1).to_numpy().astype(np.int64)
    return connected_components(n, left, right)


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components by hooking roots to the smaller root and pointer jumping, all in
    numpy (a million links in a second or two): each node's label is its component's
    smallest node."""
    labels = np.arange(n, dtype=np.int64)
    if len(left) == 0:
        return labels
    while True:
        root_l, root_r = labels[left], labels[right]
        differ = root_l != root_r
        if not differ.any():
            return labels
        low = np.minimum(root_l[differ], root_r[differ])
        np.minimum.at(labels, root_l[differ], low)
        np.minimum.at(labels, root_r[differ], low)
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped


# ---------------------------------------------------------------- stable ids


def _assign_ids(con: duckdb.DuckDBPyConnection, ident: IdentityResolution, max_seq: int,
                run_id: str, now: datetime, stats: dict[str, Any]) -> pa.Table:
    """id_ids(rid, customer_id, customer_seq), and the run's id changes.

    Each previous id goes to the new cluster holding most of its records (ties: the cluster
    of the smallest record id). A cluster keeps the oldest (smallest) id that went to it; the
    others it received are retired as `merged` into it. A cluster that received none gets a
    new id; when it holds records of an earlier id, that is a `split` from that id."""
    con.execute(f"""CREATE OR REPLACE TABLE id_overlap AS
        SELECT c.cluster, p.customer_seq AS seq, count(*) AS n
        FROM {RECORDS} r JOIN id_clusters c USING (rid)
        JOIN {PREVIOUS} p ON p.source_table = r.source_table AND p.source_key = r.source_key
        GROUP BY ALL""")
    con.execute("""CREATE OR REPLACE TABLE id_home AS SELECT seq, cluster, n FROM (
        SELECT *, row_number() OVER (PARTITION BY seq ORDER BY n DESC, cluster) AS rank
        FROM id_overlap) WHERE rank = 1""")
    con.execute("CREATE OR REPLACE TABLE id_kept AS SELECT cluster, min(seq) AS seq "
                "FROM id_home GROUP BY cluster")
    con.execute(f"""CREATE OR REPLACE TABLE id_new AS
        SELECT cluster, {int(max_seq)} + row_number() OVER (ORDER BY cluster) AS seq
        FROM (SELECT DISTINCT cluster FROM id_clusters) WHERE cluster NOT IN
        (SELECT cluster FROM id_kept)""")
    con.execute("CREATE OR REPLACE TABLE id_cluster_seq AS SELECT cluster, seq FROM id_kept "
                "UNION ALL SELECT cluster, seq FROM id_new")
    prefix = ident.id_prefix
    fmt = f"'{prefix}' || lpad(CAST(seq AS VARCHAR), {SEQ_DIGITS}, '0')"
    con.execute(f"""CREATE OR REPLACE TABLE id_ids AS SELECT c.rid, {fmt} AS customer_id,
        s.seq AS customer_seq FROM id_clusters c JOIN id_cluster_seq s USING (cluster)""")
    changes = con.sql(f"""
        SELECT 'merged' AS change, {fmt.replace('seq', 'k.seq')} AS customer_id,
               k.seq AS customer_seq, {fmt.replace('seq', 'h.seq')} AS other_customer_id,
               h.seq AS other_seq, h.n AS records
        FROM id_home h JOIN id_kept k USING (cluster) WHERE h.seq <> k.seq
        UNION ALL
        SELECT 'split', {fmt.replace('seq', 'w.seq')}, w.seq, {fmt.replace('seq', 'o.seq')},
               o.seq, o.n
        FROM id_new w JOIN (SELECT cluster, arg_max(seq, n) AS seq, max(n) AS n
                            FROM id_overlap GROUP BY cluster) o USING (cluster)
        ORDER BY 1, 3, 5""").to_arrow_table()
    changes = changes.append_column("run_id", pa.array([run_id] * changes.num_rows, pa.string()))
    changes = changes.append_column("changed_at",
                                    pa.array([now] * changes.num_rows, pa.timestamp("us")))
    carried = con.execute(f"""SELECT count(*), count(*) FILTER (WHERE p.customer_seq =
        i.customer_seq) FROM {RECORDS} r JOIN id_ids i USING (rid)
        JOIN {PREVIOUS} p ON p.source_table = r.source_table AND p.source_key = r.source_key
        """).fetchall()[0]
    assert carried is not None
    kinds = changes.column("change").to_pylist()
    stats |= {"previous_records": carried[0], "records_keeping_id": carried[1],
              "stability": carried[1] / carried[0] if carried[0] else 1.0,
              "ids_merged": kinds.count("merged"), "ids_split": kinds.count("split"),
              "ids_new": _count(con, "id_new"),
              "max_seq": con.execute("SELECT coalesce(max(seq), 0) FROM id_cluster_seq"
                                     ).fetchall()[0][0]}  # type: ignore[index]
    return changes


# ---------------------------------------------------------------- outputs


def _unified(con: duckdb.DuckDBPyConnection, ident: IdentityResolution,
             now: datetime) -> pa.Table:
    """One row per customer: each field by its survivorship rule, and record counts."""
    sources = list(ident.sources)
    cols, freq = [], []
    for f in ident.fields:
        rule = ident.survivorship_of(f)
        q = f'"{f}"'
        order = {
            "most_recent": "updated_at DESC NULLS LAST, src_rank, rid",
            "most_frequent": f"freq_{f} DESC, updated_at DESC NULLS LAST, src_rank, rid",
            "first_non_null": f"{_source_order(rule.sources, sources)}, updated_at ASC NULLS "
                              "LAST, rid",
            "preferred_source": f"{_source_order(rule.sources, sources)}, updated_at DESC "
                                "NULLS LAST, rid",
        }[rule.rule]
        if rule.rule == "most_frequent":
            freq.append(f"count({q}) OVER (PARTITION BY customer_id, {q}) AS freq_{f}")
        cols.append(f"first({q} ORDER BY {order}) FILTER (WHERE {q} IS NOT NULL) AS {q}")
    per_source = [f"count(*) FILTER (WHERE source_table = '{s}') AS \"records_{s}\""
                  for s in sources]
    extra = (", " + ", ".join(freq)) if freq else ""
    return con.sql(f"""SELECT customer_id, {', '.join(cols)}, count(*) AS source_records,
        {', '.join(per_source)}, min(updated_at) AS first_seen_at,
        max(updated_at) AS last_updated_at, CAST($now AS TIMESTAMP) AS resolved_at
        FROM (SELECT r.*, i.customer_id{extra} FROM {RECORDS} r JOIN id_ids i USING (rid))
        GROUP BY customer_id ORDER BY customer_id""", params={"now": now}).to_arrow_table()


def _source_order(preferred: list[str], sources: list[str]) -> str:
    ranked = preferred + [s for s in sources if s not in preferred]
    cases = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(ranked))
    return f"CASE source_table {cases} END"


def _pairs(con: duckdb.DuckDBPyConnection, ident: IdentityResolution) -> pa.Table:
    """Sampled pairs with their rule or score and both records' values, for review: per layer
    `review_pairs` of them (splink's: half nearest the threshold, half at random)."""
    n = int(ident.review_pairs)
    parts = [f"""SELECT * FROM (SELECT 'exact' AS layer, rule, CAST(NULL AS DOUBLE) AS
        match_probability, CAST(NULL AS DOUBLE) AS match_weight, true AS merged, rid_l, rid_r
        FROM id_exact ORDER BY hash(rid_l, rid_r) LIMIT {n})"""]
    if _exists(con, "id_scored") and ident.probabilistic is not None:
        threshold = ident.probabilistic.threshold
        parts.append(f"""SELECT * FROM (SELECT 'splink', CASE WHEN refused THEN
            'splink (refused by the household rule)' ELSE 'splink' END, match_probability,
            match_weight, merged, rid_l, rid_r FROM id_scored
            ORDER BY abs(match_probability - {threshold}), hash(rid_l, rid_r) LIMIT {n // 2})""")
        parts.append(f"""SELECT * FROM (SELECT 'splink', CASE WHEN refused THEN
            'splink (refused by the household rule)' ELSE 'splink' END, match_probability,
            match_weight, merged, rid_l, rid_r FROM id_scored
            ORDER BY hash(rid_r, rid_l) LIMIT {n - n // 2})""")
    values = ", ".join(f'l."{f}" AS "{f}_l", r."{f}" AS "{f}_r"' for f in ident.fields)
    return con.sql(f"""SELECT DISTINCT ON (p.rid_l, p.rid_r) p.layer, p.rule,
            p.match_probability, p.match_weight, p.merged,
            l.source_table AS source_table_l, l.source_key AS source_key_l,
            r.source_table AS source_table_r, r.source_key AS source_key_r,
            il.customer_id AS customer_id_l, ir.customer_id AS customer_id_r, {values}
        FROM ({' UNION ALL '.join(parts)}) p
        JOIN {RECORDS} l ON l.rid = p.rid_l JOIN {RECORDS} r ON r.rid = p.rid_r
        JOIN id_ids il ON il.rid = p.rid_l JOIN id_ids ir ON ir.rid = p.rid_r
        ORDER BY p.rid_l, p.rid_r, p.layer""").to_arrow_table()


def _biggest(con: duckdb.DuckDBPyConnection, ident: IdentityResolution,
             top: int = 10) -> list[dict[str, Any]]:
    """The largest clusters with a few values each, for the materialization's preview."""
    shown = [f for f, role in ident.fields.items()
             if role in ("email", "phone", "given_name", "surname", "full_name")][:4]
    values = ", ".join(f'string_agg(DISTINCT "{f}", \' / \') AS "{f}"' for f in shown)
    rows = con.execute(f"""WITH top AS (SELECT customer_id, count(*) AS records FROM id_ids
            GROUP BY customer_id ORDER BY records DESC, customer_id LIMIT {top})
        SELECT i.customer_id, any_value(top.records) AS records,
        string_agg(DISTINCT r.source_table, ', ') AS sources{', ' + values if values else ''}
        FROM top JOIN id_ids i USING (customer_id) JOIN {RECORDS} r USING (rid)
        GROUP BY i.customer_id ORDER BY records DESC, i.customer_id""")
    names = [d[0] for d in rows.description]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $t",
                            {"t": table}).fetchall()[0][0])  # type: ignore[index]
