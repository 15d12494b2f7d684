"""The ``buildjail`` command: a thin shell over the library, one module per subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import EXIT_SETUP_FAILED, BuildjailError, SandboxSetupError, render_setup_failure
from . import audit, build, doctor, fromager, run
from ._options import error


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``buildjail`` command."""
    parser = argparse.ArgumentParser(
        prog="buildjail", description="Run Python build backends inside a Linux sandbox."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, build, audit, fromager, doctor):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_paths(args)
        code: int = args.handler(args, parser)
        return code
    except SandboxSetupError as failure:
        print(render_setup_failure(failure), file=sys.stderr)
        return EXIT_SETUP_FAILED
    except BuildjailError as failure:
        error(str(failure))
        return 2
    except KeyboardInterrupt:
        return 130


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a --readonly or --writable path that does not exist: bad input, exit 2."""
    for option in ("readonly", "writable"):
        for path in getattr(args, option, ()):
            if not os.path.lexists(path):
                raise BuildjailError(f"--{option} {path}: no such file or directory")


__all__ = ["build_parser", "main"]
