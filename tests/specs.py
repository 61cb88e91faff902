"""Workflow specs the tests write: the `people` workflow many of them start from (people.csv in
a landing folder, loaded into domain.people), and writing a spec where Stagecoach reads it.

The spec stays YAML text, as a user writes it; the arguments are YAML lines put where their
names say, already indented as in the result.
"""

from __future__ import annotations

from pathlib import Path

CITY_COLUMNS = """\
      customer_id: {source: id, tag: id}
      name: {tag: name}
      city: {tag: text}"""
NAME_COLUMNS = """\
      customer_id: {source: id, tag: id}
      name: {tag: name}"""
EVERYONE_QUERY = """\
queries:
  everyone:
    sql: "select customer_id, name, city from domain.people order by customer_id\""""

# members.csv from `inbox` (relative: the workflows folder) into domain.members, keyed and checked.
MEMBERS_WORKFLOW = """
workflow: {name: members_load}
connections:
  inbox: {kind: folder, path: inbox}
couriers:
  members: {from: inbox, path: members.csv}
domain_tables:
  members:
    from: members
    columns:
      member_id: {tag: id, required: true, not_null: true}
      email: {tag: email}
"""


def people_spec(name: str, landing: Path | str, *, workflow: str = "", connections: str = "",
                courier: str = "path: people.csv", couriers: str = "",
                columns: str = CITY_COLUMNS, rest: str = "") -> str:
    """A workflow `name` loading people.csv from the folder `landing` into domain.people.

    `workflow`: lines under `workflow:` after the name; `connections`: after `landing`;
    `courier`: the people courier's settings after `from: landing`; `couriers`: more couriers;
    `columns`: domain.people's columns; `rest`: the sections after (queries, activations...).
    """
    return f"""
workflow:
  name: {name}
{workflow}
connections:
  landing: {{kind: folder, path: {landing}}}
{connections}
couriers:
  people: {{from: landing, {courier}}}
{couriers}
domain_tables:
  people:
    from: people
    columns:
{columns}
{rest}
"""


def write_workflow(root: Path, name: str, text: str) -> Path:
    """`text` as root/workflows/<name>.yaml; the folder, as build_definitions and the
    `workflow_runner` fixture take it."""
    folder = root / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder
