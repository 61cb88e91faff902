"""`python -m orchestration validate [PATH] | demo | history | download ID | webhook | docs |
cancel-retry RUN_ID`."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

from orchestration.settings import (
    DAGSTER_URL_ENV,
    DEFAULT_DAGSTER_URL,
    dagster_url,
    workflows_dir,
)
from orchestration.spec_loader import SpecInvalid, load_workflows


def validate(path: Path | None) -> int:
    try:
        loaded = load_workflows(path)
    except SpecInvalid as invalid:
        for error in invalid.errors:
            print(error, file=sys.stderr)
        print(f"{len(invalid.errors)} error(s); nothing was loaded.", file=sys.stderr)
        return 1
    for item in loaded:
        spec = item.spec
        print(f"{item.path}: workflow {spec.workflow.name!r} is valid: "
              f"{len(spec.couriers)} couriers, {len(spec.domain_tables)} domain tables, "
              f"{sum(len(d.tables) for d in spec.databases.values())} database tables, "
              f"{len(spec.queries)} queries, {len(spec.activations)} activations")
    return 0


def file_history(args: argparse.Namespace) -> int:
    from orchestration import history

    try:
        if args.command == "download":
            copied = history.download(args.ledger_id, args.to)
            print(f"{copied} (md5 checked against the ledger)")
            return 0
        entries = history.ledger().find(workflow=args.workflow, activation=args.activation,
                                        day=args.day, limit=args.limit)
    except (history.HistoryError, SpecInvalid) as failed:
        print(failed, file=sys.stderr)
        return 1
    print("\n".join(history.history_lines(entries)) if entries else "no delivered files yet")
    return 0


def webhook(args: argparse.Namespace) -> int:
    from orchestration.webhook import WebhookConfigError, WebhookLimits, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        serve(args.host, args.port, args.dagster_url,
              limits=WebhookLimits(requests_per_caller=args.requests_per_minute))
    except SpecInvalid as invalid:
        for error in invalid.errors:
            print(error, file=sys.stderr)
        return 1
    except (WebhookConfigError, OSError) as failed:
        print(f"webhook not started: {failed}", file=sys.stderr)
        return 1
    return 0


def docs(args: argparse.Namespace) -> int:
    from orchestration.definitions import build_definitions
    from orchestration.flow_docs import flow_markdown

    try:
        defs = build_definitions(args.path)
        names = args.workflow or [w.spec.workflow.name for w in load_workflows(args.path)]
        text = "\n".join(flow_markdown(defs, name) for name in names)
    except SpecInvalid as invalid:
        print(invalid, file=sys.stderr)
        return 1
    except ValueError as unknown:
        print(unknown, file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"{args.out}: {', '.join(names)}")
    return 0


def _login() -> str:
    """The operator's name; a uid without a passwd entry or $USER (containers) is shown as
    such rather than failing."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def cancel_retry(args: argparse.Namespace) -> int:
    """Stop a run's pending step retries: its next attempt fails and the run ends failed."""
    import dagster as dg

    from assets.automations import request_cancel_retry

    with dg.DagsterInstance.get() as instance:
        try:
            print(request_cancel_retry(instance, args.run_id, args.by or _login()))
        except ValueError as refused:
            print(f"cancel-retry: {refused}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check workflow specs; exit 1 on any error")
    check.add_argument("path", nargs="?", type=Path, default=None,
                       help=f"a spec file or folder (default {workflows_dir()})")
    demo = commands.add_parser("demo", help="generate the demo's files and run it end to end")
    demo.add_argument("--days", type=int, default=7, help="days of orders to generate")
    history = commands.add_parser("history", help="list delivered files (newest first)")
    history.add_argument("--workflow")
    history.add_argument("--activation")
    history.add_argument("--day", help="YYYY-MM-DD: a partition or the day files were made")
    history.add_argument("--limit", type=int, default=50)
    fetch = commands.add_parser("download", help="copy an archived file out, md5-checked")
    fetch.add_argument("ledger_id")
    fetch.add_argument("--to", type=Path, default=Path("."), help="folder (default: here)")
    hook = commands.add_parser("webhook", help="launch jobs of webhook triggers over HTTP "
                                               "(POST /launch/<job>, bearer token)")
    hook.add_argument("--host", default="127.0.0.1")
    hook.add_argument("--port", type=int, default=8080)
    hook.add_argument("--dagster-url", default=None,
                      help=f"the Dagster webserver (default ${DAGSTER_URL_ENV} or "
                           f"{DEFAULT_DAGSTER_URL})")
    hook.add_argument("--requests-per-minute", type=int, default=30,
                      help="per caller address; more get 429 (behind a proxy every caller "
                           "shares its address)")
    flow = commands.add_parser("docs", help="write each workflow's flow (assets, Mermaid graph, "
                                             "jobs, schedules, sensors) as Markdown")
    flow.add_argument("path", nargs="?", type=Path, default=None,
                      help=f"a spec file or folder (default {workflows_dir()})")
    flow.add_argument("--workflow", action="append", help="only this workflow (repeatable)")
    flow.add_argument("--out", type=Path, help="a file (default: standard output)")
    stop = commands.add_parser("cancel-retry", help="no further step retries for a run (it "
                                                    "ends as failed); uses $DAGSTER_HOME")
    stop.add_argument("run_id")
    stop.add_argument("--by", help="who cancels (default: your login name)")
    args = parser.parse_args(argv)
    if args.command == "cancel-retry":
        return cancel_retry(args)
    if args.command == "docs":
        return docs(args)
    if args.command == "validate":
        return validate(args.path)
    if args.command in ("history", "download"):
        return file_history(args)
    if args.command == "webhook":
        args.dagster_url = args.dagster_url or dagster_url()
        return webhook(args)
    from orchestration.demo import run_demo

    return run_demo(days=args.days)


if __name__ == "__main__":
    sys.exit(main())
