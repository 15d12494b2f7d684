"""``buildjail fromager``: fromager with every isolated build step in the sandbox."""

from __future__ import annotations

import argparse

from ._checks import check_existing_paths
from ._options import (
    absolute,
    add_backend,
    add_on_attempt,
    add_policy,
    add_readonly,
    after_dashes,
    load_policy,
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fromager`` to *commands*."""
    fromager = commands.add_parser(
        "fromager", help="run fromager with every build hook in the sandbox")
    add_policy(fromager, "named policy for fromager's isolated steps (default: full)",
               "policy TOML file")
    add_backend(fromager)
    add_on_attempt(fromager, "an isolated step")
    add_readonly(fromager, "every isolated step")
    fromager.add_argument("--inspect", action="store_true",
                          help="inspect every wheel fromager builds, as `buildjail inspect` "
                               "does; a wheel that tried anything fails its package")
    fromager.add_argument("args", nargs=argparse.REMAINDER, metavar="-- FROMAGER_ARGS...")
    fromager.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``buildjail fromager``; return fromager's exit code."""
    from ..fromager import run_fromager

    check_existing_paths("--readonly", args.readonly)
    check_existing_paths("--policy", [args.policy] if args.policy else [])
    policy = load_policy(args).with_paths(readonly=absolute(args.readonly)).with_on_attempt(
        args.on_attempt)
    return run_fromager(after_dashes(args.args), policy, backend=args.backend,
                        inspect=args.inspect)
