"""Exceptions raised by buildjail, their exit codes, and how a set-up failure is told."""

from __future__ import annotations

EXIT_TIMEOUT = 124
EXIT_SETUP_FAILED = 125
EXIT_TRIED = 1
"""A run that tried the network or a decoy under ``on_attempt = "fail"`` (``buildjail run``,
a fromager step): it fails, with this code unless its own already says it failed."""

_PROGRAM = "buildjail: "
_NOT_SET_UP = "sandbox not set up: "
_FIX = "fix: "


class BuildjailError(Exception):
    """Base class of every error buildjail raises."""


class PolicyError(BuildjailError):
    """A policy (profile, TOML file or override) is invalid."""


class SandboxSetupError(BuildjailError):
    """A requested isolation layer could not be set up; the run did not start."""

    exit_code = EXIT_SETUP_FAILED

    def __init__(self, reason: str, fix: str = "") -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason} (fix: {fix})" if fix else reason)


def render_setup_failure(error: SandboxSetupError) -> str:
    """The lines a program's stderr gets when its sandbox could not be set up."""
    fix = f"\n  {_FIX}{error.fix}" if error.fix else ""
    return f"{_PROGRAM}{_NOT_SET_UP}{error.reason}{fix}"


def parse_setup_failure(text: str) -> tuple[str, str]:
    """The reason and the fix in *text*, as :func:`render_setup_failure` wrote them.

    The reason is the first line (whatever it says); either is "" when *text* has none.
    """
    lines = [line.removeprefix(_PROGRAM).strip() for line in text.strip().splitlines()]
    if not lines:
        return "", ""
    reason = lines[0].removeprefix(_NOT_SET_UP)
    fix = next((line.removeprefix(_FIX) for line in lines[1:] if line.startswith(_FIX)), "")
    return reason, fix
