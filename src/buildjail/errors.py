"""Exceptions raised by buildjail."""

from __future__ import annotations

EXIT_TIMEOUT = 124
EXIT_SETUP_FAILED = 125


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
