"""`python -m orchestration validate [PATH] | demo | history | download ID | webhook | docs |
cancel-retry RUN_ID | tick NAME [PATH] | jobs [PATH] | run JOB | backfill JOB`."""

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

import dagster as dg

from orchestration.spec_loader import SpecInvalid, load_workflows
from resources.settings import (
    DAGSTER_URL_ENV,
    DEFAULT_DAGSTER_URL,
    dagster_url,
    workflows_dir,
)


def validate(path: Path | None) -> int:
    """`validate`: load every spec and print each error with file and line; 1 if any."""
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
    """`history`: the files delivered, newest first."""
    from orchestration.cli import history

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
    """`webhook`: serve the webhook launcher until stopped."""
    from orchestration.cli.webhook import WebhookConfigError, WebhookLimits, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        serve(args.host, args.port, args.dagster_url,
              limits=WebhookLimits(requests_per_caller=args.requests_per_minute,
                                   max_connections_per_address=args.connections_per_address,
                                   trusted_proxies=frozenset(args.trusted_proxy)))
    except SpecInvalid as invalid:
        for error in invalid.errors:
            print(error, file=sys.stderr)
        return 1
    except (WebhookConfigError, OSError) as failed:
        print(f"webhook not started: {failed}", file=sys.stderr)
        return 1
    return 0


def docs(args: argparse.Namespace) -> int:
    """`docs`: each workflow's flow document, to standard output or a file."""
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


def tick(args: argparse.Namespace) -> int:
    """Evaluate one schedule or sensor tick here, without the daemon; print what it asks for."""
    from datetime import datetime

    from orchestration.cli.tick import TickError, evaluate_tick, tick_instance, tick_lines
    from orchestration.definitions import build_definitions

    try:
        at = datetime.fromisoformat(args.time) if args.time else None
    except ValueError:
        print(f"tick: --time {args.time!r} is not an ISO date and time such as "
              "2026-11-07T03:00 or 2026-11-07T03:00:00-05:00", file=sys.stderr)
        return 1
    try:
        defs = build_definitions(args.path)
        with tick_instance() as (instance, which):
            print(which, file=sys.stderr)
            result = evaluate_tick(defs, args.name, instance, args.cursor, at)
    except SpecInvalid as invalid:
        print(invalid, file=sys.stderr)
        return 1
    except TickError as refused:
        print(f"tick: {refused}", file=sys.stderr)
        return 1
    except dg.DagsterUserCodeExecutionError as failed:
        cause = failed.__cause__ or failed
        print(f"tick of {args.name} failed (the daemon would mark it failed): "
              f"{type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    print("\n".join(tick_lines(result)))
    return 0


def jobs(args: argparse.Namespace) -> int:
    """`jobs`: every workflow job with the day a launch now would run, then every schedule and
    sensor ON or OFF as the spec says (what `dagster dev` starts)."""
    from datetime import UTC, datetime

    from orchestration.cli.operate import instigator_lines, job_lines, job_targets
    from orchestration.definitions import build_definitions

    try:
        targets = job_targets(load_workflows(args.path))
        defs = build_definitions(args.path)
    except SpecInvalid as invalid:
        print(invalid, file=sys.stderr)
        return 1
    print("Jobs (a launch without a day runs the day shown):")
    print("\n".join(f"  {line}" for line in job_lines(targets, datetime.now(UTC))))
    print("Schedules and sensors (ON: started by Dagster as soon as it loads; OFF: start them "
          "in the UI):")
    print("\n".join(instigator_lines(defs)))
    return 0


def operate(args: argparse.Namespace) -> int:
    """`run` / `backfill`: launch a workflow job for its rule's day, a day or a range, through
    the webserver (the UI shows the runs); `--dry-run` prints them only."""
    from datetime import UTC, datetime

    from orchestration.cli import operate as ops

    try:
        target = ops.find(ops.job_targets(load_workflows(args.path)), args.job)
        day = ops.parse_day(args.day, "--day") if getattr(args, "day", None) else None
        first = ops.parse_day(args.first, "--from") if args.first else None
        last = ops.parse_day(args.last, "--to") if args.last else None
        if args.command == "backfill" and (first is None or last is None):
            raise ops.OperateError("backfill needs --from and --to (one day: `run --day`)")
        days = ops.plan(target, datetime.now(UTC), day, first, last)
        by = args.by or _login()
        for partition, when in days:
            tags = ops.launch_tags(partition, when, by)
            print(f"{'would launch' if args.dry_run else 'launching'} {target.name} for "
                  f"{when} (partition {partition or '-'}; tags "
                  f"{', '.join(f'{k}={v}' for k, v in sorted(tags.items()))})")
        if args.dry_run:
            return 0
        url = args.dagster_url or dagster_url()
        if args.command == "backfill":
            backfill_id = ops.backfill(url, target, days, by)
            print(f"backfill {backfill_id} of {len(days)} partition(s) launched; the daemon "
                  f"starts its runs: {url.rstrip('/')}/runs/b/{backfill_id}")
            return 0
        for run_id in ops.run_days(url, target, days, by):
            print(f"run {run_id}: {url.rstrip('/')}/runs/{run_id}")
    except SpecInvalid as invalid:
        print(invalid, file=sys.stderr)
        return 1
    except ops.OperateError as refused:
        print(f"{args.command}: {refused}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `python -m orchestration` command line; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m orchestration")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check workflow specs; exit 1 on any error")
    check.add_argument("path", nargs="?", type=Path, default=None,
                       help=f"a spec file or folder (default {workflows_dir()})")
    demo = commands.add_parser("demo", help="generate the demo's files and run it end to end")
    demo.add_argument("--days", type=int, default=7, help="days of orders to generate")
    history = commands.add_parser("history", help="list delivered files (newest first)")
    history.add_argument("--workflow")
    history.add_argument("--activation", help="an activation, or a deliver step as "
                                              "<automation>__<step>")
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
                      help="per caller address; more get 429 (behind a proxy, name it with "
                           "--trusted-proxy or every caller shares its address)")
    hook.add_argument("--connections-per-address", type=int, default=16,
                      help="open connections one address may hold; more get 503 at once")
    hook.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                      help="a reverse proxy's address (repeatable): its X-Forwarded-For names "
                           "the caller, and its connections are not capped per address")
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
    one = commands.add_parser("tick", help="evaluate one tick of a schedule or sensor here, "
                                           "without the daemon: its run requests or skip reason")
    one.add_argument("name", help="e.g. acme_retail_nightly_schedule or a sensor's name")
    one.add_argument("path", nargs="?", type=Path, default=None,
                     help=f"a spec file or folder (default {workflows_dir()})")
    one.add_argument("--cursor", help="a sensor's cursor (as printed by the previous tick); "
                                      "default none: its first tick")
    one.add_argument("--time", help="a schedule's tick time, ISO 8601 (no offset: the "
                                    "schedule's time zone); default now")
    listing = commands.add_parser("jobs", help="every workflow job and the day a launch now "
                                                "would run; schedules and sensors ON or OFF")
    listing.add_argument("path", nargs="?", type=Path, default=None,
                         help=f"a spec file or folder (default {workflows_dir()})")
    for command, text in (("run", "launch a workflow job for its day (the last complete day "
                                  "if dated, else today), a day or a range: one run per day"),
                          ("backfill", "a Dagster backfill of a dated job's days --from/--to "
                                       "(the daemon launches its runs)")):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("job", help="a job's name, e.g. acme_retail_nightly_job (see `jobs`)")
        if command == "run":
            sub.add_argument("--day", help="YYYY-MM-DD (default: the rule's day)")
        sub.add_argument("--from", dest="first", help="first day YYYY-MM-DD of a range")
        sub.add_argument("--to", dest="last", help="last day YYYY-MM-DD of a range")
        sub.add_argument("--dry-run", action="store_true",
                         help="print the runs (job, day, partition, tags); launch nothing")
        sub.add_argument("--by", help="who launches (default: your login name)")
        sub.add_argument("--dagster-url", default=None,
                         help=f"the Dagster webserver (default ${DAGSTER_URL_ENV} or "
                              f"{DEFAULT_DAGSTER_URL})")
        sub.add_argument("--path", type=Path, default=None,
                         help=f"a spec file or folder (default {workflows_dir()})")
    args = parser.parse_args(argv)
    if args.command == "jobs":
        return jobs(args)
    if args.command in ("run", "backfill"):
        if args.command == "run" and args.day and (args.first or args.last):
            parser.error("run: --day or --from/--to, not both")
        return operate(args)
    if args.command == "tick":
        return tick(args)
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
    from orchestration.cli.demo import run_demo

    return run_demo(days=args.days)


if __name__ == "__main__":
    sys.exit(main())
