"""``buildjail audit``: attack this host's sandbox with real probes."""

from __future__ import annotations

import argparse
import sys

from ..policy import PROFILES
from ._options import BACKEND_CHOICES, error


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` to *commands*."""
    audit = commands.add_parser("audit", help="attack this host's sandbox with real probes")
    audit.add_argument("--profile", action="append", choices=PROFILES, dest="profiles",
                       help="profile to audit (repeatable; default: none, network, full)")
    audit.add_argument("--backend", action="append", choices=BACKEND_CHOICES,
                       dest="backends", help="backend to audit (repeatable; default: auto)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.add_argument("-v", "--verbose", action="store_true",
                       help="print each probe's evidence before the table")
    audit.add_argument("--keep-workdir", action="store_true",
                       help="keep the audit's work directory (logs, the probe project)")
    audit.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``buildjail audit``; return 1 when the ``full`` profile failed, else 0."""
    from ..audit import run_audit
    from ..audit.report import print_json, print_table
    from ..backends import resolved

    profiles = args.profiles or ["none", "network", "full"]
    backends = [resolved(name) for name in (args.backends or ["auto"])]
    quiet = args.json or not sys.stderr.isatty()
    report = run_audit(profiles, list(dict.fromkeys(backends)), keep_workdir=args.keep_workdir,
                       progress=None if quiet else error)
    if args.json:
        print_json(report, sys.stdout)
    else:
        print_table(report, sys.stdout, evidence=args.verbose)
    return 1 if report.failed("full") else 0
