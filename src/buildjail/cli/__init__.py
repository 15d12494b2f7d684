"""The ``buildjail`` command: a thin shell over the library, one module per subcommand."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import EXIT_SETUP_FAILED, BuildjailError, SandboxSetupError, render_setup_failure

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Any, NoReturn

COMMANDS = ("run", "build", "inspect", "audit", "fromager", "doctor")
"""The subcommands, in ``--help``'s order; each is the module ``buildjail.cli.NAME``, imported
only when it is the one asked for (or for ``--help``, an error, ...): start-up time."""


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, told the terminal's width as :func:`shutil.get_terminal_size`
    finds it: argparse makes one for every option it adds, and would import shutil (and the
    compression modules shutil imports) to find it."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    """The terminal's width: ``COLUMNS``, else standard output's terminal, else 80."""
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no standard output, or not a terminal
        return 80


class _Parser(argparse.ArgumentParser):
    """argparse, with every usage error in one line: ``buildjail: MESSAGE``, exit 2."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(formatter_class=_Formatter, **kwargs)  # the subcommands' too

    def error(self, message: str) -> NoReturn:
        """Print *message* in one line and exit 2."""
        command = self.prog.removeprefix("buildjail").strip()
        hint = f"buildjail {command} --help" if command else "buildjail --help"
        _say(f"{message} (see {hint})")
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


def _say(message: str) -> None:
    """``buildjail: MESSAGE`` on stderr (``_options``, and what it imports, loaded only now:
    importing this module is the console script's first step, before :func:`command`)."""
    from ._options import error

    error(message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser of the ``buildjail`` command (with *only* that subcommand,
    importing no other subcommand's module, when it names one)."""
    parser = _Parser(
        prog="buildjail", description="Run Python build backends inside a Linux sandbox."
    )
    parser.add_argument("--version", action=_VersionAction)
    # prog given: argparse would build a help formatter (and import shutil) to work it out
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     prog=parser.prog)
    for name in (only,) if only in COMMANDS else COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(commands)
    return parser


def command() -> int:
    """The ``buildjail`` command (its console script, ``python -m buildjail``): :func:`main`
    in a process of its own, whose start-up the garbage collector leaves alone; ``run``
    ends the process as soon as it returns (:func:`_exit_now`)."""
    gc.disable()  # start-up makes modules, classes and functions, no garbage: nothing to find
    try:
        code = main(started=_started)
    finally:
        gc.freeze()  # the exit then frees by reference counts, not by walking every object
    if sys.argv[1:2] == ["run"]:  # top-level options come first, as for build_parser
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process with *code* once standard output and error are flushed, without the
    interpreter's teardown (~4 ms of freeing every module): ``buildjail run`` leaves nothing
    to it — no thread of its own (a decoy watch's closing thread only closes a descriptor,
    which the exit closes too), no ``atexit`` work, no file left open for writing. A stream
    that cannot be flushed returns instead: the interpreter's exit reports it as ever."""
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _started() -> None:
    """Start-up is over: what it made is kept out of every collection, which resumes."""
    gc.freeze()
    gc.enable()


def main(argv: Sequence[str] | None = None, *,
         started: Callable[[], None] | None = None) -> int:
    """Run the command line; return the exit code (*started* is called once the arguments
    are parsed, before the subcommand runs)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=argv[0] if argv else None)  # top-level options come first
    args = parser.parse_args(argv)
    if started is not None:
        started()
    try:
        code: int = args.handler(args, parser)
        return code
    except SandboxSetupError as failure:
        print(render_setup_failure(failure), file=sys.stderr)
        return EXIT_SETUP_FAILED
    except BuildjailError as failure:
        _say(" ".join(str(failure).split("\n")))
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "command", "main"]
