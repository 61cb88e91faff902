"""A workflow's flow as a Markdown document: what Dataiku's "flow documentation export" gives,
read from the same Definitions the code location serves (so it cannot drift from what runs).

Assets with their owners, kinds and descriptions; dependencies as a Mermaid graph; jobs,
schedules, sensors and alert reporters.
"""

import re
from collections.abc import Iterable

import dagster as dg


def _cell(text: object) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _node_id(key: dg.AssetKey) -> str:
    return re.sub(r"\W", "_", "__".join(key.path))


def _status(default_status: object) -> str:
    return "on" if str(getattr(default_status, "value", default_status)) == "RUNNING" else "off"


def flow_markdown(defs: dg.Definitions, workflow: str) -> str:
    """The Markdown document of one workflow of `defs`."""
    repository = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    keys = sorted((k for k in graph.get_all_asset_keys()
                   if graph.get(k).group_name == workflow), key=lambda k: k.to_user_string())
    if not keys:
        raise ValueError(f"no workflow named {workflow!r} in this code location")
    prefix = f"{workflow}_"
    lines = [f"# Workflow `{workflow}`", ""]
    lines += ["## Flow", "", "```mermaid", "graph LR"]
    for key in keys:
        lines.append(f'  {_node_id(key)}["{key.to_user_string()}"]')
    for key in keys:
        for parent in sorted(graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
            lines.append(f"  {_node_id(parent)} --> {_node_id(key)}")
    lines += ["```", ""]
    lines += ["## Assets", "", "| asset | kinds | owners | depends on | description |",
              "|---|---|---|---|---|"]
    for key in keys:
        node = graph.get(key)
        lines.append("| " + " | ".join(_cell(v) for v in (
            f"`{key.to_user_string()}`", ", ".join(sorted(node.kinds)), ", ".join(node.owners),
            ", ".join(sorted(p.to_user_string() for p in node.parent_keys)),
            node.description)) + " |")
    jobs = sorted((j for j in repository.get_all_jobs() if j.name.startswith(prefix)),
                  key=lambda j: j.name)
    lines += ["", "## Jobs", "", "| job | description |", "|---|---|"]
    lines += [f"| `{j.name}` | {_cell(j.description)} |" for j in jobs]
    schedules = _named(repository.schedule_defs, prefix)
    lines += ["", "## Schedules", "", "| schedule | job | cron | time zone | default |",
              "|---|---|---|---|---|"]
    lines += [f"| `{s.name}` | `{s.job_name}` | `{s.cron_schedule}` | "
              f"{s.execution_timezone or 'UTC'} | {_status(s.default_status)} |"
              for s in schedules]
    sensors = _named(repository.sensor_defs, prefix)
    lines += ["", "## Sensors", "", "| sensor | every | default | description |",
              "|---|---|---|---|"]
    lines += [f"| `{s.name}` | {s.minimum_interval_seconds or 30} s | "
              f"{_status(s.default_status)} | {_cell(s.description)} |" for s in sensors]
    reporters = sorted({r for s in sensors for r in _reporters(s)})
    if reporters:
        lines += ["", "## Alert reporters", ""] + [f"- {_cell(r)}" for r in reporters]
    return "\n".join(lines) + "\n"


def _named(items: Iterable, prefix: str) -> list:
    return sorted((i for i in items if i.name.startswith(prefix)), key=lambda i: i.name)


def _reporters(sensor: dg.SensorDefinition) -> list[str]:
    value = (sensor.metadata or {}).get("reporters")
    return list(getattr(value, "value", None) or [])
