"""One package's sandbox for fromager's proposed hooks: its directory, its identity, its steps.

:func:`set_up` prepares the package's directory (``work-dir/{name}-{version}``, the
parent of its source tree) — the only tree its steps may write, with a ``dist`` for the
outputs, a ``home`` for what steps keep between them (the XDG directories point there)
and a ``tmp`` for pyproject_hooks' files — and, as root, leases one ephemeral identity
every step of the package runs as. Each step runs through :class:`.steps.StepRunner`, the
step runner of ``buildjail fromager``, one at a time. :meth:`PackageSandbox.tear_down`
kills whatever still runs as that identity, checks that nothing under the directory is
still its own, and releases it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from collections.abc import Iterable, Mapping

from .._linux import identity
from ..errors import BuildjailError, SandboxSetupError
from ..policy import Policy
from ..trees import remove_tree, walk
from .steps import PackageTrees, StepRunner

OWN_TREES = ("dist", "home", "tmp")
"""The directories of the package's directory every step may write."""
XDG_DIRS = {"XDG_CACHE_HOME": ".cache", "XDG_CONFIG_HOME": ".config",
            "XDG_DATA_HOME": ".local/share", "XDG_STATE_HOME": ".local/state"}
"""The XDG variables of every step, under the package's ``home``."""


class PackageSandbox:
    """The sandbox of one package and version: its steps run one at a time, as one identity."""

    def __init__(self, trees: PackageTrees, policy: Policy, backend: str,
                 launched_with: Iterable[str], lease: identity.Lease | None) -> None:
        """*lease*: the identity every step runs as (None: each run's own, or the caller's)."""
        self.trees = trees
        self.policy = policy.with_env(keep=list(XDG_DIRS))
        self.backend = backend
        self.launched_with = frozenset(launched_with)
        self.lease = lease
        self.closed = False
        self._lock = threading.Lock()

    @property
    def uid(self) -> int | None:
        """The leased uid of the package's steps, if it has one."""
        return self.lease.identity.uid if self.lease is not None else None

    def run(self, cmd: list[str], *, cwd: str, env: Mapping[str, str], stdin: int | None,
            output: int | None, timeout: float | None = None) -> int:
        """Run one step; its exit code (125 when it cannot run, the reason in *output*)."""
        with self._lock:
            if self.closed:
                raise BuildjailError(f"the sandbox of {self.trees.root} was torn down")
            return self._steps(timeout).run(cmd, cwd=cwd, env={**env, **self._xdg()},
                                            stdin=stdin, output=output)

    def check(self) -> None:
        """Run ``true`` in the sandbox: SandboxSetupError, with the reason, if it cannot start."""
        with open(os.devnull, "wb") as null, self._lock:
            self._steps(None).execute(["true"], cwd="/", env=os.environ, output=null.fileno())

    def tear_down(self) -> None:
        """Kill what runs as the package's identity, check the hand-back, release it."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                if self.uid is not None:
                    kill_processes_of(self.uid)
                    check_handed_back(self.trees.root, self.uid)
            finally:
                if self.lease is not None:
                    self.lease.release()
                remove_tree(os.path.join(self.trees.root, "home"))

    def _steps(self, timeout: float | None) -> StepRunner:
        policy = self.policy
        if timeout is not None:
            wall = policy.limits.wall_time
            policy = policy.with_limits(wall_time=timeout if wall is None else min(wall, timeout))
        return StepRunner(policy, self.backend, self.launched_with, lease=self.lease,
                          package=self.trees)

    def _xdg(self) -> dict[str, str]:
        home = os.path.join(self.trees.root, "home")
        return {name: os.path.join(home, below) for name, below in XDG_DIRS.items()}


def set_up(root: str, policy: Policy, backend: str, environ: Mapping[str, str]) -> PackageSandbox:
    """The sandbox of the package directory *root*, checked by running ``true`` in it."""
    trees = PackageTrees(root, tuple(_own_directory(root, name) for name in OWN_TREES))
    lease = identity.acquire() if os.geteuid() == 0 and policy.ephemeral_identity else None
    sandbox = PackageSandbox(trees, policy, backend, environ, lease)
    try:
        sandbox.check()
    except BaseException:
        sandbox.tear_down()
        raise
    return sandbox


def _own_directory(root: str, name: str) -> str:
    """``root/name``, made (``0700``) unless it is a directory already; never a link."""
    path = os.path.join(root, name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise BuildjailError(f"{path} is not a directory; buildjail makes it the package's "
                             f"{name} directory")
    return path


def kill_processes_of(uid: int) -> list[int]:
    """SIGKILL every process running as *uid* (any of its uids); return their pids."""
    killed = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            pidfd = os.pidfd_open(int(name))
        except OSError:
            continue
        try:
            # Read after the pidfd pins the process: a pid reused since is signalled never.
            if uid in _uids(name):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed.append(int(name))
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return killed


def _uids(pid: str) -> set[int]:
    with open(f"/proc/{pid}/status") as stream:
        for line in stream:
            if line.startswith("Uid:"):
                return {int(field) for field in line.split()[1:]}
    return set()


def check_handed_back(root: str, uid: int) -> None:
    """SandboxSetupError, with *uid* quarantined, if anything under *root* is still its own.

    The supervisor hands the trees back after every step; this checks it for the package.
    """
    errors: list[str] = []
    left = [entry.path for entry in walk(root, errors)
            if uid in (entry.info.st_uid, entry.info.st_gid)]
    if not left:
        return
    identity.quarantine(uid)
    raise SandboxSetupError(
        f"files of the package's build identity are left in {root} (e.g. {left[0]}); "
        f"uid {uid} is quarantined and will not be used again",
        f"fix the ownership under {root} by hand (find -uid {uid}), then remove the line "
        f"from {identity.LOCK_DIR}/{identity.QUARANTINE_FILE}")
