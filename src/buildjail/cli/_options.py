"""What the subcommands share: option definitions, the policy they name, stderr messages."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from ..attempts import ON_ATTEMPT
from ..backends import BACKENDS
from ..policy import PROFILES, Policy

BACKEND_CHOICES = ("auto", *BACKENDS)


def add_policy(parser: argparse.ArgumentParser, profile_help: str, file_help: str) -> None:
    """Add ``--profile`` and ``--policy FILE``."""
    parser.add_argument("--profile", choices=PROFILES, default="full", help=profile_help)
    parser.add_argument("--policy", metavar="FILE", help=file_help)


def add_on_attempt(parser: argparse.ArgumentParser, what: str, more: str = "") -> None:
    """Add ``--on-attempt warn|fail`` (default: the policy's, ``warn`` unless it says), its
    help ending with *more*."""
    parser.add_argument("--on-attempt", choices=ON_ATTEMPT, default=None,
                        help=f"when {what} tried the network or a decoy: warn (the tried: "
                             "line; the default) or fail it, and fail (exit 125) where "
                             "attempts cannot be recorded (over the policy file's on_attempt)"
                             f"{more}")


def add_backend(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend``."""
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="what enforces the policy (default: auto; see `buildjail doctor`)")


def add_readonly(parser: argparse.ArgumentParser, to: str) -> None:
    """Add ``--readonly PATH`` (repeatable): paths shown read-only *to* what runs."""
    parser.add_argument("--readonly", metavar="PATH", action="append", default=[],
                        help=f"show PATH read-only to {to}, e.g. a toolchain outside /usr "
                             "(repeatable)")


def load_policy(args: argparse.Namespace) -> Policy:
    """The policy ``--profile``/``--policy`` name."""
    return Policy.load(args.profile, args.policy)


def absolute(paths: Iterable[str]) -> list[str]:
    """*paths*, made absolute."""
    return [os.path.abspath(path) for path in paths]


def after_dashes(args: list[str]) -> list[str]:
    """The arguments of ``-- ARGS...`` (argparse keeps the ``--`` of a REMAINDER)."""
    return args[1:] if args[:1] == ["--"] else args


def write_report(path: str, data: object) -> None:
    """Write *data* as JSON to *path* (checked before the run); BuildjailError if it fails."""
    import json

    from ..errors import BuildjailError

    try:
        with open(path, "w") as stream:
            json.dump(data, stream, indent=2)
    except OSError as failure:
        raise BuildjailError(f"cannot write the report {path}: "
                             f"{failure.strerror or failure}") from None


def error(message: str) -> None:
    """Print ``buildjail: MESSAGE`` on stderr."""
    print(f"buildjail: {message}", file=sys.stderr)


def hidden_tools_hint(policy: Policy) -> str:
    """After a failure: the hint naming the PATH directories *policy*'s view hides."""
    from ..explain import failure_hint

    return failure_hint(policy, os.environ.get("PATH", ""))
