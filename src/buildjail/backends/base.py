"""What every backend shares: the request and the plan of a sandbox (the backend protocol,
:class:`~.protocol.Backend`, is a module of its own: it needs typing, which a run does not).

The supervisor plans what every backend needs alike (:class:`SandboxPlan`); each backend
turns that into its :class:`Launch`, grouped by concern (:class:`SetUp`,
:class:`Confinement`, :class:`Command`); the supervisor adds how the init watches the
command (:class:`Watch`) and hands the init the whole :class:`InitPlan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .._linux import kernel as k
from .._linux.filesystem import MountPlan
from .._linux.identity import Identity, Lease
from .._linux.landlock import RulesetPlan
from ..limits import Limits
from ..policy import Policy

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from .._records import NamedTuple

SUPERVISOR_NAMESPACES = frozenset({"user", "pid"})
"""Namespaces the supervisor makes before it starts the init; the init makes the others."""

Stdio = tuple[int | None, int | None, int | None]


class Request(NamedTuple):
    """One command to run under a policy, with its environment already filtered."""

    policy: Policy
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    lease: Lease | None = None
    """An identity the caller holds across runs (one package's steps); None: one per run."""
    fork_server: bool | None = None
    """Fork the supervisor through the fork server (True), from the caller itself (False),
    or through the server where the caller is large (None; ``_supervisor.FORK_SERVER_RSS``)."""

    @property
    def stdio(self) -> Stdio:
        """The command's standard streams; None passes the caller's own on."""
        return (self.stdin, self.stdout, self.stderr)


class SandboxPlan(NamedTuple):
    """What the supervisor planned alike for every backend, before any backend plans."""

    request: Request
    namespaces: frozenset[str]
    """Every namespace the sandbox gets, the supervisor's (user, pid) included."""
    identity: Identity
    leased: bool
    """The build runs as a leased ephemeral identity, an outsider to the caller's files."""
    root: bool
    """The caller is root (its effective uid)."""
    hostname: str | None
    mounts: MountPlan | None
    env: dict[str, str]
    seccomp_program: bytes | None
    degraded: Mapping[str, str] = {}
    """Layers kept weaker than the policy asks, because the runtime forbids them: why."""

    @property
    def policy(self) -> Policy:
        """The request's policy."""
        return self.request.policy

    @property
    def init_namespaces(self) -> frozenset[str]:
        """The namespaces left for the init (or the tool it starts) to make."""
        return self.namespaces - SUPERVISOR_NAMESPACES


class SetUp(NamedTuple):
    """What the init builds before it confines itself: namespaces, hostname, mounts."""

    namespaces: int
    """The CLONE_NEW* flags the init unshares."""
    hostname: str | None = None
    loopback: bool = False
    """Bring up ``lo`` in the init's network namespace."""
    mounts: MountPlan | None = None
    """The filesystem view the init builds itself; None leaves it to the command."""
    fresh_proc: bool = False
    """Mount a ``/proc`` of the sandbox's pid namespace."""
    staged: tuple[tuple[str, str, bool], ...] = ()
    """(source, target, writable) trees re-attached where the dropped identity can reach."""
    subreaper: bool = False
    """Without a pid namespace: the init adopts every orphan of the command (a child
    subreaper), so that what the command leaves running is still its to kill."""
    decoys: tuple[tuple[str, str], ...] = ()
    """(path in the view, name shown) of the credential decoys the init watches for opens."""
    dns_trap: bool = False
    """Bind the recording resolver on 127.0.0.1:53 in the init's network namespace."""
    record_calls: bool = False
    """Start the command under seccomp's recording filter (stacked on the deny filter),
    whose listener the supervisor reads: the programs it starts, where it connects."""
    record_leftovers: bool = False
    """Once the command exited, record what it left running: the init adopts every orphan
    (pid 1 of the sandbox's pid namespace with its own ``/proc``, or a subreaper)."""


class Confinement(NamedTuple):
    """How the init confines itself, and so the command it spawns."""

    identity: Identity
    switch_identity: bool
    drop_capabilities: bool
    no_new_privs: bool
    seccomp_program: bytes | None
    limits: Limits
    landlock: RulesetPlan | None = None
    """The Landlock ruleset the init enforces on itself, after no_new_privs."""
    process_rlimit: bool = True
    """Limit processes with RLIMIT_NPROC too; not where the build shares the caller's uid
    without a user namespace (it would count every process of the caller's)."""
    map_identity: bool = False
    """Switch into a user namespace of its own, mapped by the supervisor, where the identity
    is seen as its fixed inside ids (``Identity.mapped``)."""


class Command(NamedTuple):
    """What the init spawns, with what, and how it learns that it started."""

    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    stdio: Stdio
    new_session: bool = False
    kill_descendants: bool = False
    """When the command ends, kill every process it left (no pid namespace does it)."""
    inherited_fds: tuple[int, ...] = ()
    """Descriptors the spawned program inherits (bubblewrap's data and seccomp fds)."""
    status_fd: int | None = None
    """The spawned tool's status stream (bubblewrap's ``--json-status-fd``): its child's
    pid, then whether it executed the command."""
    block_fd: int | None = None
    """The write end of the spawned tool's ``--block-fd``: closed by the init once it
    watches the decoys in the tool's view."""


class Watch(NamedTuple):
    """How the init watches the command: its own monitor, and the cgroup beside it."""

    monitor: bool = False
    cgroup_enforced: bool = False
    """A cgroup enforces memory and processes: the monitor adds only what it may not count."""
    cgroup_usage_fd: int | None = None
    """The cgroup's memory usage file, to which the monitor adds socket buffers."""
    descendants: bool = False
    """The monitor counts the init's descendants, not a pid namespace's processes."""
    decoy_fd: int | None = None
    """The caller's inotify instance for the decoy watch: the init adds the watches to it,
    and the caller, whose copy is the last, closes it after the run, off its path
    (:class:`~buildjail._linux.inotify.DecoyWatch`)."""


class Launch(NamedTuple):
    """A backend's plan for its sandbox's init, and the descriptors it lends the init."""

    setup: SetUp
    confinement: Confinement
    command: Command
    fds: tuple[int, ...] = ()
    """Caller-side descriptors the init passes on; closed by the caller after the run."""
    layers: tuple[str, ...] = ()
    """Layers the backend enforces beyond the ones every backend names."""
    scratch: tuple[str, ...] = ()
    """Trees the backend made for this run alone: removed by the supervisor after the
    hand-back (it outlives a killed caller)."""
    degraded: Mapping[str, str] = {}
    """What the backend cannot give of the policy, per layer: why (shown, never silent)."""


class InitPlan(NamedTuple):
    """Everything the sandbox's init needs: a backend's launch and the supervisor's watch."""

    setup: SetUp
    confinement: Confinement
    command: Command
    watch: Watch

    def stdio_fds(self) -> tuple[int, ...]:
        """The descriptors the plan gives the command as its standard streams."""
        return tuple(fd for fd in self.command.stdio if fd is not None)


PlanLaunch = Callable[[SandboxPlan], Launch]
"""A backend's planner: its launch, from what the supervisor planned for every backend."""


def namespace_flags(names: frozenset[str] | set[str]) -> int:
    """The CLONE_NEW* flags of the namespaces called *names*."""
    flags = 0
    for name in names:
        flags |= k.NAMESPACE_FLAGS[name]
    return flags


def decoys_of(mounts: MountPlan | None) -> tuple[tuple[str, str], ...]:
    """(path, ``~/name``) of each decoy file the view's home holds."""
    if mounts is None:
        return ()
    home = mounts.identity.home.rstrip("/") + "/"
    return tuple((entry.path, "~/" + entry.path[len(home):]) for entry in mounts.home_entries
                 if entry.kind == "file" and entry.path.startswith(home))
