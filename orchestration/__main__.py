"""`python -m orchestration validate [PATH]` and `python -m orchestration demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestration.settings import workflows_dir
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check workflow specs; exit 1 on any error")
    check.add_argument("path", nargs="?", type=Path, default=None,
                       help=f"a spec file or folder (default {workflows_dir()})")
    demo = commands.add_parser("demo", help="generate the demo's files and run it end to end")
    demo.add_argument("--days", type=int, default=7, help="days of orders to generate")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return validate(args.path)
    from orchestration.demo import run_demo

    return run_demo(days=args.days)


if __name__ == "__main__":
    sys.exit(main())
