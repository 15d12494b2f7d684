"""The ``buildjail`` command: a thin shell over the library, one module per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import EXIT_SETUP_FAILED, BuildjailError, SandboxSetupError, render_setup_failure
from . import audit, build, doctor, fromager, run
from ._options import error


class _Parser(argparse.ArgumentParser):
    """argparse, with every usage error in one line: ``buildjail: MESSAGE``, exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print *message* in one line and exit 2."""
        command = self.prog.removeprefix("buildjail").strip()
        hint = f"buildjail {command} --help" if command else "buildjail --help"
        error(f"{message} (see {hint})")
        sys.exit(2)


class _VersionAction(argparse.Action):
    """``--version``: print ``buildjail X.Y.Z`` from the installed metadata, exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print buildjail's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> NoReturn:
        """Print the version (read only now: the metadata look-up is not free) and exit."""
        print(f"buildjail {installed_version()}")
        parser.exit(0)


def installed_version() -> str:
    """buildjail's version from its installed metadata (the package's own when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("buildjail")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``buildjail`` command."""
    parser = _Parser(
        prog="buildjail", description="Run Python build backends inside a Linux sandbox."
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, build, audit, fromager, doctor):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args, parser)
        return code
    except SandboxSetupError as failure:
        print(render_setup_failure(failure), file=sys.stderr)
        return EXIT_SETUP_FAILED
    except BuildjailError as failure:
        error(" ".join(str(failure).split("\n")))
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
