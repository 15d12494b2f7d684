"""The sandbox: one policy, one backend, and ``run`` for each command."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from .backends import Lease, Request, get_backend
from .environment import filter_environment
from .errors import SandboxSetupError
from .policy import Policy
from .result import RunResult

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from .backends import Backend


class Sandbox:
    """Runs commands under a policy, enforced by a backend (by default ``auto``'s choice)."""

    def __init__(self, policy: Policy | str = "full", backend: Backend | str = "auto", *,
                 lease: Lease | None = None, fork_server: bool | None = None) -> None:
        """*lease*: an identity held for every run of this sandbox (run one at a time).

        *fork_server*: start each run from a small server process, whose fork costs the
        same whatever this process's size (True), fork it from this process (False), or
        choose by this process's resident memory (None).
        """
        self.lease = lease
        self.fork_server = fork_server
        self.policy = Policy.profile(policy) if isinstance(policy, str) else policy
        self.backend = get_backend(backend) if isinstance(backend, str) else backend

    def run(
        self,
        cmd: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        writable: Iterable[str | os.PathLike[str]] = (),
        readonly: Iterable[str | os.PathLike[str]] = (),
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> RunResult:
        """Run *cmd* in the sandbox and return its result; the streams pass through."""
        if not cmd:
            raise SandboxSetupError("no command to run", "pass the command after --")
        policy = self.policy.with_paths(
            readonly=[_absolute(path) for path in readonly],
            writable=[_absolute(path) for path in writable],
        )
        base_env = os.environ if env is None else env
        request = Request(
            policy=policy,
            argv=tuple(os.fspath(arg) for arg in cmd),
            cwd=_absolute(cwd if cwd is not None else os.getcwd()),
            env=filter_environment(base_env, policy.env_keep, policy.env_delete,
                                   redact=policy.env_redact),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            lease=self.lease,
            fork_server=self.fork_server,
        )
        return self.backend.run(request)


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))
