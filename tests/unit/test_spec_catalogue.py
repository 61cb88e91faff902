"""The bad-spec catalogue: every invalid spec with its exact expected messages."""

from pathlib import Path

import pytest

from orchestration.spec_loader import SpecInvalid, load_workflow_text

VALID = """\
workflow:
  name: acme
  owners: [team:data]
  start_date: 2026-11-01
  params: {threshold: 10}
connections:
  landing: {kind: folder, path: landing}
  vendor_sftp:
    kind: sftp
    host: sftp.example.com
    username: acme
    password: {env: VENDOR_SFTP_PASSWORD}
couriers:
  orders:
    from: landing
    path: orders_{{ ds_nodash }}.csv
domain_tables:
  orders:
    from: orders
    columns:
      order_id: {tag: id, required: true}
      amount: {tag: decimal}
databases:
  sales:
    tables:
      daily: {sql: "select * from domain.orders"}
queries:
  big_orders:
    sql: "select * from sales.daily where amount > {{ params.threshold }}"
activations:
  export:
    query: big_orders
    to: vendor_sftp
    file: {type: psv, name: "big_{{ ds_nodash }}.txt"}
"""


def errors_of(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(SpecInvalid) as raised:
        load_workflow_text(text, "wf.yaml", tmp_path)
    return [str(e) for e in raised.value.errors]


def test_the_valid_base_loads(tmp_path: Path) -> None:
    workflow = load_workflow_text(VALID, "wf.yaml", tmp_path)
    assert workflow.couriers["orders"].dated
    assert workflow.connections["landing"].path == str(tmp_path / "landing")


CATALOGUE = [
    ("unknown key", ("    path: orders_{{ ds_nodash }}.csv\n",
                     "    path: orders_{{ ds_nodash }}.csv\n    colour: blue\n"),
     ["wf.yaml:17 couriers.orders.colour: unknown key 'colour'; remove it or check its "
      "spelling"]),
    ("unknown section", ("queries:\n", "segmentz: {}\nqueries:\n"),
     ["wf.yaml:27 segmentz: unknown section 'segmentz' (known: workflow, connections, "
      "couriers, domain_tables, databases, queries, identity, activations, courier_groups, "
      "orchestration_groups, triggers, profiles, automations, alerts)"]),
    ("dangling connection", ("    from: landing\n    path: orders",
                             "    from: vendr_sftp\n    path: orders"),
     ["wf.yaml:15 couriers.orders.from: unknown connection 'vendr_sftp' (known: landing, "
      "vendor_sftp)"]),
    ("dangling courier", ("    from: orders\n", "    from: order\n"),
     ["wf.yaml:19 domain_tables.orders.from: unknown courier 'order' (known: orders)"]),
    ("dangling query", ("    query: big_orders\n", "    query: big_order\n"),
     ["wf.yaml:32 activations.export.query: unknown query 'big_order' (known: big_orders)"]),
    ("unknown table in SQL", ("from domain.orders", "from domain.ordrs"),
     ["wf.yaml:26 databases.sales.tables.daily.sql: unknown table 'domain.ordrs' in the SQL "
      "(known: domain.orders)"]),
    ("secret as a literal", ("password: {env: VENDOR_SFTP_PASSWORD}", "password: hunter2"),
     ["wf.yaml:12 connections.vendor_sftp.password: is a secret: write {env: VARIABLE_NAME} "
      "and set that variable in the environment; a literal value is not accepted"]),
    ("unknown connection kind", ("{kind: folder, path: landing}", "{kind: ftps, path: x}"),
     ["wf.yaml:7 connections.landing: unknown kind 'ftps' (known: 'folder', 'sftp', 'ftp', "
      "'smb', 's3', 'smtp', 'sql')"]),
    ("missing kind", ("{kind: folder, path: landing}", "{path: landing}"),
     ["wf.yaml:7 connections.landing: missing `kind:` (one of: folder, sftp, ftp, smb, s3, "
      "smtp, sql)"]),
    ("quality check without kind", ("      amount: {tag: decimal}\n",
                                    "      amount: {tag: decimal}\n"
                                    "    quality:\n      - {columns: [order_id]}\n"),
     ["wf.yaml:24 domain_tables.orders.quality.0: missing `kind:` (one of: row_count, "
      "not_null, unique, accepted_values, freshness, sql)"]),
    ("table quality check without kind", ('daily: {sql: "select * from domain.orders"}',
                                          'daily: {sql: "select * from domain.orders", '
                                          'quality: [{min: 1}]}'),
     ["wf.yaml:26 databases.sales.tables.daily.quality.0: missing `kind:` (one of: row_count,"
      " not_null, unique, accepted_values, freshness, sql)"]),
    ("trigger without kind", ('name: "big_{{ ds_nodash }}.txt"}\n',
                              'name: "big_{{ ds_nodash }}.txt"}\n'
                              "triggers:\n  drop: {job: workflow, when: {path: x.csv}}\n"),
     ["wf.yaml:36 triggers.drop.when: missing `kind:` (one of: file_change, table_change, "
      "sql_change, python, webhook)"]),
    ("missing required key", ("    host: sftp.example.com\n", ""),
     ["wf.yaml:8 connections.vendor_sftp.host: is required"]),
    ("wrong type", ("    username: acme\n", "    username: acme\n    port: high\n"),
     ["wf.yaml:12 connections.vendor_sftp.port: Input should be a valid integer, unable to "
      "parse string as an integer"]),
    ("port out of range", ("    username: acme\n", "    username: acme\n    port: 70000\n"),
     ["wf.yaml:12 connections.vendor_sftp.port: Input should be less than or equal to 65535"]),
    ("too many connection retries", ("    username: acme\n",
                                     "    username: acme\n    retries: 20\n"),
     ["wf.yaml:12 connections.vendor_sftp.retries: Input should be less than or equal to 10"]),
    ("negative retry backoff", ("    username: acme\n",
                                "    username: acme\n    backoff_seconds: -1\n"),
     ["wf.yaml:12 connections.vendor_sftp.backoff_seconds: Input should be greater than or "
      "equal to 0"]),
    ("bad rows policy", ("    from: orders\n    columns:", "    from: orders\n    bad_rows: "
                                                             "quarantine\n    columns:"),
     ["wf.yaml:20 domain_tables.orders.bad_rows: unknown value; input should be 'fail', "
      "'reject' or 'skip'"]),
    ("unknown file encoding", ("    path: orders_{{ ds_nodash }}.csv\n", "    path: orders_{{ "
                               "ds_nodash }}.csv\n    format: {encoding: latin-9}\n"),
     ["wf.yaml:17 couriers.orders.format.encoding: unknown encoding 'latin-9'; use a Python "
      "codec name such as utf-8, latin-1 or cp1252"]),
    ("line limit too small", ("    path: orders_{{ ds_nodash }}.csv\n", "    path: orders_{{ "
                              "ds_nodash }}.csv\n    format: {max_line_bytes: 10}\n"),
     ["wf.yaml:17 couriers.orders.format.max_line_bytes: Input should be greater than or equal "
      "to 1000"]),
    ("bad delimiter", ("    path: orders_{{ ds_nodash }}.csv\n", "    path: orders_{{ ds_nodash }}"
                       ".csv\n    format: {delimiter: ';;'}\n"),
     ["wf.yaml:17 couriers.orders.format.delimiter: String should have at most 1 character"]),
    ("unknown file type", ('file: {type: psv, name:', 'file: {type: docx, name:'),
     ["wf.yaml:34 activations.export.file.type: unknown value; input should be 'csv', 'tsv', "
      "'psv', 'jsonl', 'parquet' or 'xlsx'"]),
    ("bad column name", ("      amount: {tag: decimal}", "      Amount Due: {tag: decimal}"),
     ["wf.yaml:20 domain_tables.orders.columns: column name 'Amount Due' must "
      "match ^[a-z][a-z0-9_]{0,62}$"]),
    ("bad env name", ("{env: VENDOR_SFTP_PASSWORD}", "{env: vendor password}"),
     ["wf.yaml:12 connections.vendor_sftp.password.env: 'vendor password' does not match the "
      "pattern ^[A-Za-z_][A-Za-z0-9_]*$"]),
    ("missing workflow name", ("  name: acme\n", ""),
     ["wf.yaml:1 workflow.name: is required"]),
    ("unknown time zone", ("  owners: [team:data]\n",
                           "  owners: [team:data]\n  timezone: Mars/Olympus\n"),
     ["wf.yaml:4 workflow.timezone: unknown time zone 'Mars/Olympus'; use an IANA name such "
      "as Europe/Paris or UTC"]),
    ("bad owner", ("[team:data]", "[bob]"),
     ["wf.yaml:3 workflow.owners.0: an owner is an e-mail address or `team:<name>`"]),
    ("bad name", ("  big_orders:\n", "  Big-Orders:\n"),
     ["wf.yaml:28 queries.Big-Orders: names must be lower_snake_case (a letter, then letters, "
      "digits or `_`, at most 63)",
      "wf.yaml:32 activations.export.query: unknown query 'big_orders' (known: Big-Orders)"]),
    ("unknown semantic tag", ("{tag: decimal}", "{tag: money}"),
     ["wf.yaml:22 domain_tables.orders.columns.amount.tag: unknown value; input should be "
      "'text', 'id', 'email', 'phone', 'name', 'given_name', 'surname', 'full_name', "
      "'postal_code', 'date', 'datetime', 'birthdate', 'gender', 'integer', 'decimal', "
      "'boolean', 'country', 'state', 'upper' or 'lower'"]),
    ("template does not render", ("big_{{ ds_nodash }}.txt", "big_{{ ds_nodashh }}.txt"),
     ["wf.yaml:34 activations.export.file.name: template does not render: UndefinedError: "
      "'ds_nodashh' is undefined"]),
    ("template syntax", ("orders_{{ ds_nodash }}.csv", "orders_{{ ds_nodash .csv"),
     ["wf.yaml:16 couriers.orders.path: template does not render: TemplateSyntaxError: "
      "unexpected end of template, expected 'end of print statement'."]),
    ("undefined param", ("params.threshold", "params.limit"),
     ["wf.yaml:29 queries.big_orders.sql: template does not render: UndefinedError: 'dict "
      "object' has no attribute 'limit'"]),
    ("dated without start date", ("  start_date: 2026-11-01\n", ""),
     ["wf.yaml:13 couriers.orders: its path is dated, so it is daily-partitioned: set "
      "`workflow.start_date` (the first day to load)"]),
    ("duplicate key", ("  landing: {kind: folder, path: landing}\n",
                       "  landing: {kind: folder, path: landing}\n  landing: {kind: folder, "
                       "path: other}\n"),
     ["wf.yaml:8 connections.landing: duplicate key: the later value would silently win"]),
    ("both sql and sql_file", ('daily: {sql: "select * from domain.orders"}',
                               'daily: {sql: "select 1", sql_file: daily.sql}'),
     ["wf.yaml:26 databases.sales.tables.daily: give exactly one of `sql:` or `sql_file:`"]),
    ("missing sql file", ('daily: {sql: "select * from domain.orders"}',
                          "daily: {sql_file: sql/daily.sql}"),
     ["wf.yaml:26 databases.sales.tables.daily.sql_file: no such file '{tmp}/sql/daily.sql' "
      "(paths are relative to the spec file)"]),
    ("reserved database name", ("  sales:\n    tables:", "  query:\n    tables:"),
     ["wf.yaml:24 databases.query: 'query' is reserved for Stagecoach's own schema; choose "
      "another database name",
      # True too: the renamed database's table is no longer `sales.daily`.
      "wf.yaml:29 queries.big_orders.sql: unknown table 'sales.daily' at SQL line 1; known: "
      "domain.orders, query.big_orders"]),
    ("bad primary key", ("    columns:\n      order_id", "    primary_key: [id]\n    "
                         "columns:\n      order_id"),
     ["wf.yaml:20 domain_tables.orders.primary_key: 'id' is not one of the columns (order_id, "
      "amount)"]),
    ("not YAML", ("  owners: [team:data]\n", "  owners: [team:data\n"),
     ["wf.yaml:4 not valid YAML: expected ',' or ']', but got ':'"]),
    ("dependency cycle", ('daily: {sql: "select * from domain.orders"}',
                          'daily: {sql: "select * from sales.weekly"}\n'
                          '      weekly: {sql: "select * from sales.daily"}'),
     ["wf.yaml:27 databases.sales.tables.weekly: dependency cycle: sales.daily → "
      "sales.weekly → sales.daily"]),
    ("negative bound", ("    sql: \"select * from sales.daily", "    checks: {min_rows: -1}\n"
                        "    sql: \"select * from sales.daily"),
     ["wf.yaml:29 queries.big_orders.checks.min_rows: Input should be greater than or equal "
      "to 0"]),
    ("query and courier", ("    query: big_orders\n", "    query: big_orders\n    courier: "
                                                      "orders\n"),
     ["wf.yaml:31 activations.export: give exactly one of `query:` (deliver its result as a "
      "file) or `courier:` (forward its files)"]),
    ("query without file name", ('file: {type: psv, name: "big_{{ ds_nodash }}.txt"}',
                                 "file: {type: psv}"),
     ["wf.yaml:34 activations.export.file.name: is required when delivering a query (e.g. "
      "partner_{{ ds_nodash }}.csv)"]),
    ("dangling destination in a list", ("    to: vendor_sftp\n", "    to: [vendor_sftp, "
                                                                 "outbx]\n"),
     ["wf.yaml:33 activations.export.to.1: unknown connection 'outbx' (known: landing, "
      "vendor_sftp)"]),
    ("destination twice", ("    to: vendor_sftp\n", "    to: [vendor_sftp, vendor_sftp]\n"),
     ["wf.yaml:33 activations.export.to: a destination is listed twice"]),
    ("unknown encoding", ('name: "big_{{ ds_nodash }}.txt"}',
                          'name: "big_{{ ds_nodash }}.txt", encoding: latin-2000}'),
     ["wf.yaml:34 activations.export.file.encoding: unknown encoding 'latin-2000'; use a "
      "Python codec name such as utf-8, latin-1 or cp1252"]),
    ("missing gpg key file", ("    to: vendor_sftp\n", "    to: vendor_sftp\n    seal: {gpg: "
                                                       "{recipients: [keys/partner.asc]}}\n"),
     ["wf.yaml:34 activations.export.seal.gpg.recipients.0: no such key file "
      "'{tmp}/keys/partner.asc' (paths are relative to the spec file)"]),
    ("mail settings without a mail destination", (
        "    to: vendor_sftp\n", "    to: vendor_sftp\n    mail: {to: [ops@example.com]}\n"),
     ["wf.yaml:34 activations.export.mail: `mail:` is set but no destination is an `smtp` "
      "connection"]),
    ("bad mail template", ("    to: vendor_sftp\n", "    to: [vendor_sftp, mailer]\n    "
                                                    "mail: {to: [ops@example.com], subject: "
                                                    "'{{ filename }}'}\n"),
     ["wf.yaml:33 activations.export.to.1: unknown connection 'mailer' (known: landing, "
      "vendor_sftp)",
      "wf.yaml:34 activations.export.mail.subject: template does not render: UndefinedError: "
      "'filename' is undefined"]),
    ("archive on a sftp connection", ("  params: {threshold: 10}\n",
                                      "  params: {threshold: 10}\n  archive: vendor_sftp\n"),
     ["wf.yaml:6 workflow.archive: the archive must be a folder or s3 connection, not sftp"]),
    ("forwarding with file options", ("    query: big_orders\n", "    courier: orders\n"),
     ["wf.yaml:34 activations.export.file: type: forwarded files are sent as they arrived; "
      "only `file.name` applies"]),
    ("automation without steps", ("queries:\n", "automations:\n  nightly: {}\nqueries:\n"),
     ["wf.yaml:28 automations.nightly: an automation has either `steps:` (what it does) or "
      "`chain:` (the automations it runs), and this one has neither"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("old", "new", "expected"),
                         [pytest.param(old, new, expected, id=name)
                          for name, (old, new), expected in CATALOGUE])
def test_bad_spec(old: str, new: str, expected: list[str], tmp_path: Path) -> None:
    assert old in VALID, "the mutation must apply to the valid base"
    text = VALID.replace(old, new, 1)
    assert errors_of(text, tmp_path) == [e.replace("{tmp}", str(tmp_path)) for e in expected]


@pytest.mark.bad_input
def test_sql_courier_needs_a_query(tmp_path: Path) -> None:
    text = VALID.replace("connections:\n", "connections:\n  crm: {kind: sql, url: {env: CRM}}\n"
                         ).replace("    from: landing\n", "    from: crm\n")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:15 couriers.orders: a courier from a `sql` connection needs `query:` (and no "
        "`path:`)"]


@pytest.mark.bad_input
def test_activation_cannot_go_to_a_sql_connection(tmp_path: Path) -> None:
    text = VALID.replace("connections:\n", "connections:\n  crm: {kind: sql, url: {env: CRM}}\n"
                         ).replace("    to: vendor_sftp\n", "    to: crm\n")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:34 activations.export.to: a `sql` connection cannot receive files; use a "
        "folder, sftp, ftp, smb, s3 or smtp connection"]


GROUPS = """courier_groups:
  nightly:
    couriers: [orders]
    schedule: {cron: "0 2 * * *"}
orchestration_groups:
  exports:
    activations: [export]
    after: nightly
triggers:
  drop:
    job: nightly
    when: {kind: file_change, connection: landing, path: "drops/*.csv"}
"""


@pytest.mark.bad_input
@pytest.mark.parametrize(("old", "new", "expected"), [
    ('cron: "0 2 * * *"', 'cron: "0 25 * * *"',
     "wf.yaml:38 courier_groups.nightly.schedule.cron: '0 25 * * *' is not a cron expression "
     "(five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *')"),
    ("couriers: [orders]", "couriers: [order]",
     "wf.yaml:37 courier_groups.nightly.couriers.0: unknown courier 'order' (known: orders)"),
    ('schedule: {cron: "0 2 * * *"}', 'schedule: {cron: "0 2 * * *"}\n    missing_files: wait',
     "wf.yaml:36 courier_groups.nightly: `missing_files: wait` needs `wait: {up_to: 2h}` (how "
     "long to wait for the files)"),
    ('schedule: {cron: "0 2 * * *"}',
     'schedule: {cron: "0 2 * * *"}\n    duration_alert: 90 minutes',
     "wf.yaml:39 courier_groups.nightly.duration_alert: '90 minutes' does not match the pattern "
     "^\\d+(s|m|h|d)$"),
    ("after: nightly", "after: nigthly",
     "wf.yaml:42 orchestration_groups.exports.after: unknown courier group 'nigthly' (known: "
     "nightly)"),
    ("    job: nightly", "    job: nightly_job",
     "wf.yaml:45 triggers.drop.job: unknown job 'nightly_job' (known: exports, nightly, "
     "workflow)"),
    ("connection: landing, path", "connection: vendor_sftp, path",
     ""),
    ("{kind: file_change, connection: landing, path: \"drops/*.csv\"}",
     "{kind: python, callable: \"no_such_module:go\"}",
     "wf.yaml:46 triggers.drop.when.callable: cannot import 'no_such_module': "
     "ModuleNotFoundError: No module named 'no_such_module'"),
    ("{kind: file_change, connection: landing, path: \"drops/*.csv\"}",
     "{kind: sql_change, connection: landing, query: select 1}",
     "wf.yaml:46 triggers.drop.when.connection: a sql_change trigger needs a sql connection, "
     "not folder"),
    ("{kind: file_change, connection: landing, path: \"drops/*.csv\"}",
     "{kind: webhook, token: s3cret}",
     "wf.yaml:46 triggers.drop.when.token: is a secret: write {env: VARIABLE_NAME} and set that "
     "variable in the environment; a literal value is not accepted"),
    ("    job: nightly\n", "    job: nightly\n    partition: today\n",
     "wf.yaml:46 triggers.drop.partition: `partition: today` on job 'nightly', which is dated "
     "(daily partitions of its dated couriers): today's partition exists only once the day is "
     "over. Use `last_complete_day` or leave `partition:` out"),
    ("    job: nightly\n", "    job: nightly\n    partition: yesterday\n",
     "wf.yaml:46 triggers.drop.partition: unknown value; input should be 'today' or "
     "'last_complete_day'"),
])
def test_bad_groups_and_triggers(old: str, new: str, expected: str, tmp_path: Path) -> None:
    text = (VALID + GROUPS).replace(old, new, 1)
    assert old in VALID + GROUPS
    if not expected:  # a file trigger on an sftp connection is fine
        assert load_workflow_text(text, "wf.yaml", tmp_path).triggers["drop"]
        return
    assert errors_of(text, tmp_path) == [expected]


@pytest.mark.bad_input
def test_forwarding_a_glob_needs_source_name(tmp_path: Path) -> None:
    text = (VALID.replace("orders_{{ ds_nodash }}.csv", "orders_*.csv")
            .replace("    query: big_orders\n", "    courier: orders\n")
            .replace('file: {type: psv, name: "big_{{ ds_nodash }}.txt"}',
                     'file: {name: "big_{{ ds_nodash }}.txt"}\n    seal: {zip: true, '
                     'zip_name: "{{ source_name }}.zip"}'))
    assert errors_of(text, tmp_path) == [
        "wf.yaml:34 activations.export.file.name: courier `orders` may bring several files, "
        "which would all get this one name: use {{ source_name }} in it, or leave it out to "
        "keep their names"]
    fixed = text.replace('name: "big_{{ ds_nodash }}.txt"', 'name: "big_{{ source_name }}"')
    assert load_workflow_text(fixed, "wf.yaml", tmp_path).activations["export"].courier


@pytest.mark.bad_input
def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    text = (VALID.replace("password: {env: VENDOR_SFTP_PASSWORD}", "password: hunter2")
            .replace("    from: landing\n", "    from: landin\n")
            .replace("{tag: decimal}", "{tag: money}"))
    errors = errors_of(text, tmp_path)
    assert [e.split(" ", 1)[0] for e in errors] == ["wf.yaml:12", "wf.yaml:15", "wf.yaml:22"]


@pytest.mark.bad_input
def test_a_secret_literal_is_never_echoed(tmp_path: Path) -> None:
    text = VALID.replace("password: {env: VENDOR_SFTP_PASSWORD}", "password: s3cr3t-value")
    with pytest.raises(SpecInvalid) as raised:
        load_workflow_text(text, "wf.yaml", tmp_path)
    assert "s3cr3t-value" not in str(raised.value)


@pytest.mark.bad_input
def test_a_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    text = VALID.replace("couriers:\n  orders:", "couriers: [orders]\nx:\n  orders:")
    errors = errors_of(text, tmp_path)
    assert "wf.yaml:13 couriers: must be a mapping of name → settings" in errors


def test_the_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 30


@pytest.mark.bad_input
@pytest.mark.parametrize(("sql", "message"), [
    ("where d = '{{ ds }}'", "{{ … }} inside quotes: write it without quotes, it becomes a "
                            "bound value (e.g. `where day = {{ ds }}`)"),
    ("from domain.orders_{{ ds_nodash }}", "{{ … }} glued to a name: in SQL a template value "
                                           "is a bound value, so it cannot build table or "
                                           "column names"),
])
def test_sql_templates_must_be_bound_values(sql: str, message: str, tmp_path: Path) -> None:
    text = VALID.replace('"select * from sales.daily where amount > {{ params.threshold }}"',
                         f'"select * from sales.daily {sql}"')
    assert f"wf.yaml:29 queries.big_orders.sql: {message}" in errors_of(text, tmp_path)


@pytest.mark.bad_input
def test_a_setting_of_the_wrong_shape_gets_one_plain_message(tmp_path: Path) -> None:
    text = VALID.replace("host: sftp.example.com", "host: [a, b]")
    assert errors_of(text, tmp_path) == [
        "wf.yaml:10 connections.vendor_sftp.host: must be text or {env: VARIABLE_NAME}"]


def test_year_month_day_paths_are_dated(tmp_path: Path) -> None:
    text = VALID.replace("orders_{{ ds_nodash }}.csv", '"{{ year }}/{{ month }}/orders.csv"')
    assert load_workflow_text(text, "wf.yaml", tmp_path).couriers["orders"].dated


@pytest.mark.bad_input
def test_two_workflows_cannot_share_an_asset_key(tmp_path: Path) -> None:
    from orchestration.spec_loader import load_workflows

    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text(VALID.replace("name: acme", "name: beta").replace(
        "domain_tables:", "domain_tables: {}\nx_domain_tables:").split("x_domain_tables:")[0])
    with pytest.raises(SpecInvalid) as raised:
        load_workflows(tmp_path)
    assert [str(e).replace(str(tmp_path) + "/", "") for e in raised.value.errors] == [
        "b.yaml:14 couriers.orders: courier/orders is also defined in a.yaml; workflows and "
        "asset keys are shared by the code location: rename one"]


@pytest.mark.bad_input
def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    from orchestration.spec_loader import load_workflows

    with pytest.raises(SpecInvalid, match="no workflow spec"):
        load_workflows(tmp_path)


ALERTS = """\
alerts:
  ops:
    kind: slack
    channel: "#data-alerts"
    token: {env: SLACK_BOT_TOKEN}
    send_on: [failure, missing_files]
    templates:
      failure: {title: "{{ job }} failed"}
  history: {kind: dataset}
"""
WITH_ALERTS = VALID + ALERTS

ALERT_CATALOGUE = [
    ("unknown reporter kind", ("kind: slack", "kind: pager"), [
      "wf.yaml:36 alerts.ops: unknown kind 'pager' (known: 'slack', 'mail', 'twilio', "
      "'teams', 'webhook', 'shell', 'dataset')"]),
    ("reporter without kind", ("    kind: slack\n", ""), [
      "wf.yaml:36 alerts.ops: missing `kind:` (one of: slack, mail, twilio, teams, webhook,"
      " shell, dataset)"]),
    ("token as a literal", ("token: {env: SLACK_BOT_TOKEN}", "token: xoxb-123"), [
      "wf.yaml:39 alerts.ops.token: is a secret: write {env: VARIABLE_NAME} and set that "
      "variable in the environment; a literal value is not accepted"]),
    ("unknown event", ("send_on: [failure, missing_files]", "send_on: [failure, crash]"), [
      "wf.yaml:40 alerts.ops.send_on: unknown event 'crash' (the events are start, success,"
      " failure, runtime_exceeded, missing_files, alarm, sensor_error; or write `always` or"
      " `problems`)"]),
    ("`on` instead of send_on", ("send_on: [failure, missing_files]", "on: [failure]"), [
      "wf.yaml:40 alerts.ops.on: YAML reads the key `on` as true; write `send_on:` for the "
      "events to report"]),
    ("unknown job", ("  history: {kind: dataset}", "  history: {kind: dataset, jobs: [nightly]}"),
     [
      "wf.yaml:43 alerts.history.jobs.0: unknown job 'nightly' (known: workflow)"]),
    ("template of an event not sent", ("      failure: {title:", "      success: {title:"), [
      "wf.yaml:42 alerts.ops.templates.success: this reporter does not send 'success' "
      "(send_on: ['failure', 'missing_files'])"]),
    ("template that does not render", ('{title: "{{ job }} failed"}',
                                       '{title: "{{ jobb }} failed"}'), [
      "wf.yaml:42 alerts.ops.templates.failure: alert template 'title' for event 'failure':"
      " 'jobb' is undefined; the variables are event, workflow, job, run_id, status, "
      "duration, failed_step, error, run_url, details"]),
    ("mail through a non-smtp connection", ("  history: {kind: dataset}",
                                            "  history: {kind: mail, connection: landing, "
                                            "to: [ops@acme.test]}"), [
      "wf.yaml:43 alerts.history.connection: a mail reporter needs an smtp connection, not "
      "folder"]),
    ("mail to nobody", ("  history: {kind: dataset}",
                        "  history: {kind: mail, connection: landing}"), [
      'wf.yaml:43 alerts.history: a mail reporter needs `to:` or `sms_to:` (whom to tell)',
      "wf.yaml:43 alerts.history.connection: a mail reporter needs an smtp connection, not "
      "folder"]),
    ("twilio number not E.164", ("  history: {kind: dataset}",
                                 "  history: {kind: twilio, account_sid: AC1, auth_token: "
                                 "{env: TW}, from: '5550100', to: ['+15555550199']}"), [
      "wf.yaml:43 alerts.history.from: '5550100' is not an E.164 number (+ and the country "
      "code, e.g. +15555550100)"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("old", "new", "expected"),
                         [pytest.param(old, new, expected, id=name)
                          for name, (old, new), expected in ALERT_CATALOGUE])
def test_bad_alert(old: str, new: str, expected: list[str], tmp_path: Path) -> None:
    assert old in WITH_ALERTS, "the mutation must apply to the valid base"
    text = WITH_ALERTS.replace(old, new, 1)
    assert errors_of(text, tmp_path) == expected


def test_alerts_load(tmp_path: Path) -> None:
    workflow = load_workflow_text(WITH_ALERTS, "wf.yaml", tmp_path)
    assert workflow.alerts["ops"].events == ("failure", "missing_files")
    assert workflow.alerts["history"].events[0] == "start"  # a dataset records everything


AUTOMATIONS = """\
automations:
  scores:
    params: {minimum: 3}
    steps:
      - {name: build, kind: sql, into: work.scores, sql: "select * from domain.orders"}
      - {name: check, kind: alarm, query: "select count(*) from work.scores",
         condition: "<", threshold: 3}
      - {name: remote, kind: ssh, connection: vendor_sftp, command: "ls"}
"""
WITH_AUTOMATIONS = VALID + AUTOMATIONS

AUTOMATION_CATALOGUE = [
    ("unknown key holding a mapping", ('command: "ls"}', 'command: "ls",\n'
                                       '         python: {script: score.py}}'), [
      "wf.yaml:43 automations.scores.steps.2.python: unknown key 'python'; remove it or check "
      "its spelling"]),
    ("unknown key named like its step's kind", ('command: "ls"}', 'command: "ls",\n'
                                                '         ssh: {host: a}}'), [
      "wf.yaml:43 automations.scores.steps.2.ssh: unknown key 'ssh'; remove it or check its "
      "spelling"]),
    ("unknown connection key holding a mapping", ("    username: acme\n",
                                                  "    username: acme\n    folder:\n"
                                                  "      path: x\n"), [
      "wf.yaml:12 connections.vendor_sftp.folder: unknown key 'folder'; remove it or check its "
      "spelling"]),
    ("unknown step kind", ("name: remote, kind: ssh", "name: remote, kind: rsh"), [
      "wf.yaml:42 automations.scores.steps.2: unknown kind 'rsh' (known: 'sql', 'alarm', "
      "'python', 'ssh', 'pivot', 'concat', 'etl', 'report', 'sync', 'deliver')"]),
    ("ssh through a folder connection", ("connection: vendor_sftp", "connection: landing"), [
      "wf.yaml:42 automations.scores.steps.2.connection: an ssh step needs a sftp "
      "connection, not folder"]),
    ("ssh with neither command nor script", (', command: "ls"}', "}"), [
      "wf.yaml:42 automations.scores.steps.2: give exactly one of `command:` or "
      "`script_file:`"]),
    ("two steps with one name", ("name: remote,", "name: build,"), [
      "wf.yaml:42 automations.scores.steps.2.name: two steps are named 'build'; step names "
      "must differ"]),
    ("unknown parameter in SQL", ("count(*) from work.scores", "count(*) from {{ params.x }}"),
     [
      "wf.yaml:40 automations.scores.steps.1.query: template does not render: "
      "UndefinedError: 'dict object' has no attribute 'x'"]),
    ("bad alarm condition", ('condition: "<"', 'condition: "=<"'), [
      "wf.yaml:41 automations.scores.steps.1.condition: unknown value; input should be '>',"
      " '>=', '<', '<=', '==' or '!='"]),
    ("missing python script", ('      - {name: remote, kind: ssh, connection: vendor_sftp, '
                               'command: "ls"}',
                               "      - {name: score, kind: python, script: score.py}"), [
      "wf.yaml:42 automations.scores.steps.2.script: no such script '{tmp}/score.py' (a .py"
      " file, or a folder with main.py, relative to the spec file)"]),
    ("sql into from a folder", ("kind: sql, into:", "kind: sql, connection: landing, into:"),
     [
      "wf.yaml:39 automations.scores.steps.0.connection: a sql step needs a sql connection,"
      " not folder"]),
    ("sync from an sftp connection", ("{name: build, kind: sql, into: work.scores, sql: \"select "
                                      "* from domain.orders\"}",
                                      "{name: build, kind: sync, connection: vendor_sftp, "
                                      "tables: {orders: work.orders}}"), [
      "wf.yaml:39 automations.scores.steps.0.connection: a sync step needs a sql connection,"
      " not sftp"]),
    ("sync into a bad table name", ("{name: build, kind: sql, into: work.scores, sql: \"select "
                                    "* from domain.orders\"}",
                                    "{name: build, kind: sync, connection: vendor_sftp, "
                                    "tables: {\"orders; drop\": Work.Orders}}"), [
      "wf.yaml:39 automations.scores.steps.0.tables.orders; drop: 'Work.Orders' does not"
      " match the pattern ^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$",
      "wf.yaml:39 automations.scores.steps.0.tables.orders; drop.[key]: 'orders; drop' does"
      " not match the pattern ^[A-Za-z_][A-Za-z0-9_$]*(\\.[A-Za-z_][A-Za-z0-9_$]*)?$"]),
]


@pytest.mark.parametrize(("old", "new", "expected"),
                         [pytest.param(old, new, expected, id=name)
                          for name, (old, new), expected in AUTOMATION_CATALOGUE])
def test_bad_automation(old: str, new: str, expected: list[str], tmp_path: Path) -> None:
    assert old in WITH_AUTOMATIONS, "the mutation must apply to the valid base"
    text = WITH_AUTOMATIONS.replace(old, new, 1)
    assert errors_of(text, tmp_path) == [e.replace("{tmp}", str(tmp_path)) for e in expected]


CHAINS = """\
  publish:
    mutex: exports
    steps:
      - {kind: sql, sql: "select 1"}
  nightly:
    chain: [scores, publish]
    run_as: batch
profiles:
  batch:
    connections: {vendor_sftp: vendor_sftp_batch}
"""
WITH_CHAINS = WITH_AUTOMATIONS.replace("connections:\n", """connections:
  vendor_sftp_batch:
    kind: sftp
    host: sftp.example.com
    username: acme_batch
    password: {env: VENDOR_SFTP_BATCH_PASSWORD}
""", 1) + CHAINS

CHAIN_CATALOGUE = [
    ("unknown child", ("chain: [scores, publish]", "chain: [scores, publsh]"), [
        "wf.yaml:53 automations.nightly.chain.1: unknown automation or group 'publsh' (known: "
        "nightly, publish, scores)"]),
    ("chain runs itself", ("chain: [scores, publish]", "chain: [scores, nightly]"), [
        "wf.yaml:53 automations.nightly.chain.1: a chain cannot run itself: nightly → nightly"]),
    ("child twice", ("chain: [scores, publish]", "chain: [scores, publish, scores]"), [
        "wf.yaml:53 automations.nightly.chain.2: 'scores' is twice in this chain; run it once"]),
    ("steps and chain", ("    chain: [scores, publish]\n", "    chain: [scores, publish]\n"
                         "    steps: [{kind: sql, sql: select 1}]\n"), [
        "wf.yaml:52 automations.nightly: an automation has either `steps:` (what it does) or "
        "`chain:` (the automations it runs), not both"]),
    ("mode without chain", ("    mutex: exports\n", "    mutex: exports\n    mode: parallel\n"),
     ["wf.yaml:50 automations.publish.mode: `mode` is for a `chain:` (series or parallel); an "
      "automation's steps always run in order"]),
    ("unknown mode", ("    run_as: batch\n", "    run_as: batch\n    mode: sideways\n"), [
        "wf.yaml:55 automations.nightly.mode: unknown value; input should be 'series' or "
        "'parallel'"]),
    ("children with different mutexes", ("  scores:\n", "  scores:\n    mutex: scoring\n"), [
        "wf.yaml:54 automations.nightly.chain: the children hold different mutexes (exports, "
        "scoring) and a run holds one: give them the same one"]),
    ("chain mutex over a child's", ("    run_as: batch\n",
                                    "    run_as: batch\n    mutex: nightly\n"), [
      "wf.yaml:55 automations.nightly.mutex: what this chain runs holds mutex exports and a "
      "run holds one (nightly): give the chain and what it runs the same mutex"]),
    ("unknown profile", ("run_as: batch", "run_as: bot"), [
        "wf.yaml:54 automations.nightly.run_as: unknown profile 'bot' (known: batch)"]),
    ("profile swaps kinds", ("{vendor_sftp: vendor_sftp_batch}", "{vendor_sftp: landing}"), [
        "wf.yaml:57 profiles.batch.connections.vendor_sftp: 'vendor_sftp' is a sftp connection "
        "and 'landing' a folder one; a profile swaps a connection for one of the same kind"]),
    ("profile names an unknown connection", ("{vendor_sftp: vendor_sftp_batch}",
                                             "{vendor_sftp: vendor_ftp}"), [
        "wf.yaml:57 profiles.batch.connections.vendor_sftp: unknown connection 'vendor_ftp' "
        "(known: landing, vendor_sftp, vendor_sftp_batch)"]),
]


def test_chains_load(tmp_path: Path) -> None:
    workflow = load_workflow_text(WITH_CHAINS, "wf.yaml", tmp_path)
    assert workflow.automations["nightly"].chain == ["scores", "publish"]
    assert workflow.profiles["batch"].connections == {"vendor_sftp": "vendor_sftp_batch"}


@pytest.mark.bad_input
@pytest.mark.parametrize(("old", "new", "expected"),
                         [pytest.param(old, new, expected, id=name)
                          for name, (old, new), expected in CHAIN_CATALOGUE])
def test_bad_chain(old: str, new: str, expected: list[str], tmp_path: Path) -> None:
    assert old in WITH_CHAINS, "the mutation must apply to the valid base"
    assert errors_of(WITH_CHAINS.replace(old, new, 1), tmp_path) == expected


LITERAL_URL_SWAPPED = """\
workflow: {name: acme}
connections:
  crm: {kind: sql, url: {env: CRM_DB_URL}}
  crm_batch: {kind: sql, url: {env: CRM_BATCH_DB_URL}}
profiles:
  batch: {connections: {crm: crm_batch}}
automations:
  export:
    run_as: batch
    steps:
      - {kind: sql, connection: crm, sql: "select 1"}
"""
SECRET_MESSAGE = ("is a secret: write {env: VARIABLE_NAME} and set that variable in the "
                  "environment; a literal value is not accepted")


@pytest.mark.bad_input
@pytest.mark.parametrize(("old", "line", "path"), [
    ("crm: {kind: sql, url: {env: CRM_DB_URL}}", 3, "connections.crm.url"),
    ("crm_batch: {kind: sql, url: {env: CRM_BATCH_DB_URL}}", 4, "connections.crm_batch.url"),
], ids=["the swapped connection", "the profile's connection"])
def test_a_literal_url_in_a_swapped_connection_is_one_clean_message(
        old: str, line: int, path: str, tmp_path: Path) -> None:
    """A connection that fails validation is still known to the profile check (a KeyError
    crashed `validate` here): its own message is the only one, and the secret is not shown."""
    name = old.split(":")[0]
    literal = f"{name}: {{kind: sql, url: \"postgresql://crm:hunter2@db.example.com/crm\"}}"
    assert load_workflow_text(LITERAL_URL_SWAPPED, "wf.yaml", tmp_path)
    errors = errors_of(LITERAL_URL_SWAPPED.replace(old, literal, 1), tmp_path)
    assert errors == [f"wf.yaml:{line} {path}: {SECRET_MESSAGE}"]
    assert "hunter2" not in "".join(errors)
