"""``buildjail inspect``: import built wheels in the sandbox and report what they tried."""

from __future__ import annotations

import argparse
import sys

from ._checks import check_existing_paths, duration_value
from ._options import add_backend, add_policy, load_policy


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inspect`` to *commands*."""
    inspect = commands.add_parser(
        "inspect", help="import wheels in the sandbox and report what they tried")
    add_policy(inspect, "named policy (default: full, recording attempts)", "policy TOML file")
    add_backend(inspect)
    inspect.add_argument("--find-links", metavar="DIR", action="append", default=[],
                         help="install the wheel's dependencies from the wheels in DIR "
                              "(repeatable; default: the wheel alone, --no-deps)")
    inspect.add_argument("--timeout", metavar="SECONDS", type=duration_value, default=None,
                         help="time each import and each entry point's --help may take "
                              "(default: 60)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.add_argument("wheels", nargs="+", metavar="WHEEL",
                         help="a wheel file (each is inspected in a sandbox of its own)")
    inspect.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``buildjail inspect``; 1 when a wheel tried anything suspicious (or could not be
    inspected whole), else 0."""
    from ..inspection import DEFAULT_TIMEOUT, inspect_wheels
    from ..inspection.report import print_json, print_table

    check_existing_paths("--policy", [args.policy] if args.policy else [])
    check_existing_paths("--find-links", args.find_links)
    reports = inspect_wheels(args.wheels, policy=load_policy(args), backend=args.backend,
                             find_links=args.find_links,
                             timeout=args.timeout or DEFAULT_TIMEOUT)
    if args.json:
        print_json(reports, sys.stdout)
    else:
        print_table(reports, sys.stdout)
    return 1 if any(report.verdict != "clean" for report in reports) else 0
