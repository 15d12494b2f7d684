"""The sandboxing hooks fromager proposes (its PR #1171), as buildjail types them.

fromager's proposal (``docs/proposals/sandboxing-api.md`` and ``sandboxing_api.py`` in
the fromager repository) names four hooks under ``external_commands:`` in its global
settings: ``setup_sandbox`` and ``teardown_sandbox`` (:class:`SandboxLifecycle`),
``run_sandboxed`` and ``run_unconfined`` (:class:`RunCommand`). These protocols mirror its
signatures; fromager's own ``WorkContext`` is typed only as far as buildjail reads it
(:class:`WorkContext`), so that nothing here imports fromager.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:  # fromager's type; not imported at run time (buildjail's own needs none)
    from packaging.requirements import Requirement


OptionalFile: TypeAlias = int | IO[Any] | None
"""A standard stream as ``subprocess.run`` takes it (the proposal's ``_OptionalFile``)."""
StrOrBytesPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
"""A path or argument (the proposal's ``_StrOrBytesPath``)."""
Completed: TypeAlias = subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]
"""What a run hook returns, also for a non-zero exit code."""


class EnvironmentFilter(Protocol):
    """fromager's ``external_commands`` settings (0.92.0 and later): ``keep_env``/``delete_env``."""

    def filter_env(self, env: Mapping[str, str]) -> Mapping[str, str]:
        """*env* without the variables the settings delete."""


class WorkContext(Protocol):
    """What the hooks read of fromager's ``WorkContext``: its work directory."""

    @property
    def work_dir(self) -> pathlib.Path:
        """fromager's work directory; each package's lies in it."""


class SandboxLifecycle(Protocol):
    """``setup_sandbox`` (after ``prepare_source``) or ``teardown_sandbox`` (in ``finally``)."""

    def __call__(self, *, ctx: WorkContext, req: Requirement,
                 sdist_root_dir: pathlib.Path) -> None:
        """Set up, or tear down, the sandbox of one package and version."""


class RunCommand(Protocol):
    """``run_sandboxed`` or ``run_unconfined``: a subset of ``subprocess.run``."""

    def __call__(self, args: Sequence[StrOrBytesPath], *, ctx: WorkContext,
                 req: Requirement, sdist_root_dir: pathlib.Path,
                 stdin: OptionalFile = None, stdout: OptionalFile = None,
                 stderr: OptionalFile = None, cwd: StrOrBytesPath | None = None,
                 timeout: float | None = None, text: bool | None = None,
                 env: Mapping[str, str] | None = None) -> Completed:
        """Run *args*; return its ``CompletedProcess``, also when it failed."""


class ExternalCommands(Protocol):
    """The four hooks, as a module providing them looks to fromager."""

    setup_sandbox: SandboxLifecycle
    teardown_sandbox: SandboxLifecycle
    run_sandboxed: RunCommand
    run_unconfined: RunCommand
