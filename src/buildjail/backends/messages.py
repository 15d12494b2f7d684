"""The JSON messages that cross the forks: init to supervisor, supervisor to caller.

The supervisor and the init write one JSON line each to the caller's report pipe: a
:class:`SetupFailure`, or the supervisor's :class:`Outcome`; the init writes its
:class:`InitStatus` to the supervisor's status pipe.
"""

from __future__ import annotations

from typing import NotRequired, Required, TypedDict


class SetupFailure(TypedDict):
    """A set-up failure: why the sandbox could not start, and how to fix it."""

    error: str
    fix: str


class InitStatus(TypedDict):
    """The init's report: the command's wait status and the limit that stopped it."""

    status: int
    limit: str | None
    started: NotRequired[bool]
    """Whether the spawned tool (bubblewrap) set up its sandbox and executed the command."""
    attempts: NotRequired[list[dict[str, str]]]
    """What the build tried (``buildjail.attempts``), at most MAX_ATTEMPTS distinct of a kind."""
    attempts_omitted: NotRequired[dict[str, int]]
    unrecorded: NotRequired[dict[str, str]]
    """Kinds of attempt the init meant to record and could not, per layer: why."""


class Outcome(TypedDict, total=False):
    """The supervisor's report: the command's exit code, the limit hit, the signal."""

    exit_code: Required[int]
    limit: str | None
    signal: int
    setup_failed: bool
    """The init died at set-up without reporting why (its exit code alone says it)."""
    attempts: list[dict[str, str]]
    attempts_omitted: dict[str, int]
    unrecorded: dict[str, str]
