"""``buildjail doctor``: what this host can enforce."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to *commands*."""
    doctor = commands.add_parser("doctor", help="show what this host can enforce")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of a table")
    doctor.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``buildjail doctor``; return its exit code."""
    from ..doctor import main as doctor_main

    return doctor_main(json_output=args.json)
