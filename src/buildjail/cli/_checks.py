"""Bad input, found before anything runs: every check raises BadInputError: one line, exit 2."""

from __future__ import annotations

import argparse
import os

from ..errors import BuildjailError
from ..limits import parse_duration, parse_size


class BadInputError(BuildjailError):
    """A command-line value that cannot be used; the CLI prints it in one line, exit 2."""


def size_value(text: str) -> int:
    """An argparse ``type``: a size such as ``2G``, else an argparse error."""
    try:
        return parse_size(text)
    except BuildjailError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def duration_value(text: str) -> float:
    """An argparse ``type``: a duration such as ``90s``, else an argparse error."""
    try:
        return parse_duration(text)
    except BuildjailError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_existing_paths(option: str, paths: list[str]) -> None:
    """Refuse a path of *option* that does not exist."""
    for path in paths:
        if not os.path.lexists(path):
            raise BadInputError(f"{option} {path}: no such file or directory")


def check_output_file(option: str, path: str | None) -> None:
    """Refuse a file to write that is a directory, or whose directory is missing or closed."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BadInputError(f"{option} {path}: is a directory")
    if not os.path.isdir(directory):
        raise BadInputError(f"{option} {path}: no such directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK) or (
            os.path.lexists(path) and not os.access(path, os.W_OK)):
        raise BadInputError(f"{option} {path}: permission denied")


def check_directory_option(option: str, path: str | None) -> None:
    """Refuse a directory to create or use that exists as something else."""
    if path is not None and os.path.lexists(path) and not os.path.isdir(path):
        raise BadInputError(f"{option} {path}: not a directory")


def check_interpreter(python: str) -> None:
    """Refuse a ``--python`` that is missing, not executable, not Python or older than 3.8."""
    from ..interpreters import InterpreterError, inspect

    try:
        inspect(python)
    except InterpreterError as failure:
        raise BadInputError(str(failure)) from None


def check_source(path: str) -> None:
    """Refuse a source that is missing, a directory with no project, or a broken sdist."""
    if not os.path.lexists(path):
        raise BadInputError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, name))
                   for name in ("pyproject.toml", "setup.py")):
            raise BadInputError(f"{path}: not a project: it has neither a pyproject.toml nor a "
                           "setup.py")
        return
    from ..archives import check_sdist

    # The build's own checks, writing nothing: extracting it here as well would write every
    # file twice (ArchiveError).
    check_sdist(path)
