"""The flow documentation export: the demo workflow's Markdown, read from its Definitions."""

from __future__ import annotations

from pathlib import Path

from orchestration.__main__ import main


def test_docs_command_writes_the_demo_flow(stagecoach_env: Path) -> None:
    out = stagecoach_env / "flow.md"
    assert main(["docs", "workflows", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Workflow `acme_retail`\n")
    graph = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert "  courier__orders_file --> domain__orders\n" in graph
    assert "  domain__customers --> identity__customers\n" in graph
    assert "  domain__loyalty_members --> identity__customers_map\n" in graph
    assert "  identity__customers_map --> db__customer_360__unified_customers\n" in graph
    assert "  query__high_value_customers --> activation__partner_file\n" in graph
    assert graph.count("-->") == 20  # every dependency of the demo, nothing more
    assert ("| `acme_retail_nightly_schedule` | `acme_retail_nightly_job` | `0 3 * * *` | "
            "America/New_York | on |") in text
    assert "| `acme_retail_audiences_after_sensor` |" in text
    assert "| `query/high_value_customers` | duckdb, sql | team:crm-data |" in text
    assert "- run_history: dataset stagecoach.run_history on start" in text


def test_docs_refuses_an_unknown_workflow(stagecoach_env: Path, capsys) -> None:
    assert main(["docs", "workflows", "--workflow", "acme_retale"]) == 1
    assert "no workflow named 'acme_retale'" in capsys.readouterr().err
