"""The supervisor every backend shares: lease, hand-back, wall time, limits and the report.

The supervisor plans what every backend needs alike (:func:`plan_sandbox`: identity, the
filesystem view, hostname, environment, seccomp program), asks the backend for its launch
(:data:`~.base.PlanLaunch`), then adds the cgroup and the init's watch (see
:func:`run_supervised`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import select
import signal
import socket
import stat
import threading
import time

from .. import attempts
from .._linux import cgroups, changetimes, identity, inotify, ownership, seccomp, usage, userns
from .._linux import kernel as k
from .._linux.diagnosis import explain_error  # not imported after a fork: the import lock
from .._linux.disk import DiskWatch
from .._linux.dns import RESOLV_CONF
from .._linux.filesystem import MountPlan, interpreter_paths, plan_mounts, with_decoys
from .._linux.hostname import DEGRADED_LAYER, plan_hostname
from .._linux.procfs import children, descendants
from ..decoys import DECOY_DIRECTORIES, decoy_contents, run_token
from ..errors import EXIT_SETUP_FAILED, EXIT_TIMEOUT, SandboxSetupError
from ..limits import Limits
from ..policy import Policy
from ..result import RunResult
from ..trees import remove_tree
from ._calls import KINDS as CALL_KINDS
from ._calls import CallRecorder
from ._sandbox_init import report_error, run_init
from .base import (
    SUPERVISOR_NAMESPACES,
    Confinement,
    InitPlan,
    Launch,
    PlanLaunch,
    Request,
    SandboxPlan,
    SetUp,
    Watch,
    namespace_flags,
)

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NoReturn

    from .messages import InitStatus, Outcome, SetupFailure

_INTERRUPTS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
"""Signals that would stop the supervisor, which must outlive its caller to clean up."""
_counter = itertools.count()


@functools.cache
def _seccomp_program() -> bytes:
    return seccomp.build_filter()


class _Run:
    """The caller-side state of one sandboxed command (pickled in the fork server's
    ``Handoff``)."""

    __slots__ = ("all_ids", "cgroup", "degraded", "fds", "layers", "lease", "mounts", "plan",
                 "request", "scratch", "supervisor_flags")

    def __init__(self, *, request: Request, plan: InitPlan, layers: tuple[str, ...],
                 supervisor_flags: int, mounts: MountPlan | None, all_ids: bool = False,
                 degraded: dict[str, str] | None = None, lease: identity.Lease | None = None,
                 cgroup: cgroups.Cgroup | None = None, fds: tuple[int, ...] = (),
                 scratch: tuple[str, ...] = ()) -> None:
        self.request = request
        self.plan = plan
        self.layers = layers
        self.supervisor_flags = supervisor_flags
        self.mounts = mounts
        self.all_ids = all_ids
        """The supervisor's user namespace maps every id of this one (root without
        CAP_SYS_ADMIN)."""
        self.degraded = {} if degraded is None else degraded
        """Layers kept weaker than the policy asks, because the runtime forbids them: why."""
        self.lease = lease
        self.cgroup = cgroup
        self.fds = fds
        self.scratch = scratch
        """The backend's trees of this run alone, removed after the hand-back."""

    @property
    def writable(self) -> tuple[str, ...]:
        """The writable trees: lent to the build's uid, and handed back afterwards."""
        return self.mounts.writable if self.mounts else ()

    def release(self) -> None:
        for fd in self.fds:
            if fd == self.plan.watch.decoy_fd:
                _close_later(fd)
                continue
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()
        if self.cgroup is not None:
            with contextlib.suppress(OSError):  # a busy one is removed with the next lease
                self.cgroup.remove()
        if self.lease is not None:
            self.lease.release()


def run_supervised(request: Request, backend: str, plan_launch: PlanLaunch, *,
                   namespaces: bool = True) -> RunResult:
    """Run *request* under the shared supervisor, in the sandbox *plan_launch* plans.

    *namespaces* False: the backend makes none (the policy's view and isolation are its
    to enforce otherwise); the supervisor still leases, lends, watches and reports.
    """
    start = time.monotonic()
    run = _prepare(request, plan_launch, namespaces)
    try:
        outcome = _execute(run)
    finally:
        run.release()
    return RunResult(
        exit_code=outcome["exit_code"],
        duration=time.monotonic() - start,
        layers=run.layers,
        limit_hit=outcome.get("limit"),
        signal=outcome.get("signal"),
        backend=backend,
        policy=request.policy.name,
        uid=run.plan.confinement.identity.uid,
        degraded={**run.degraded, **outcome.get("unrecorded", {})},
        attempts=attempts.from_json(outcome.get("attempts", [])),
        attempts_omitted=attempts.omitted_from_json(outcome.get("attempts_omitted")),
    )


def _prepare(request: Request, plan_launch: PlanLaunch, namespaces: bool) -> _Run:
    policy = request.policy
    _check_paths(policy, request.cwd)
    root = os.geteuid() == 0
    # Root without CAP_SYS_ADMIN (a default container) creates the other namespaces inside a
    # user namespace that maps every id it has, so the ephemeral identity works the same.
    all_ids = namespaces and root and bool(policy.namespaces) and userns.contained_root()
    lease = _lease(request) if root and policy.ephemeral_identity else None
    try:
        sandbox = plan_sandbox(request, _identity(lease), leased=lease is not None, root=root,
                               all_ids=all_ids, namespaces=namespaces)
        return _plan_run(sandbox, plan_launch(sandbox), lease, all_ids=all_ids)
    except BaseException:
        if lease is not None:
            lease.release()
        raise


def plan_sandbox(request: Request, who: identity.Identity, *, leased: bool, root: bool,
                 all_ids: bool = False, namespaces: bool = True) -> SandboxPlan:
    """Plan what every backend needs alike; reads the host, changes nothing (no root needed).

    *who* is the identity the build runs as (*leased*: an ephemeral one); *all_ids* says the
    caller is root without CAP_SYS_ADMIN, whose namespaces need a user namespace too;
    *namespaces* False plans none (the view is still planned, for the backend to enforce).
    """
    policy = request.policy
    wanted = set(policy.namespaces) if namespaces else set()
    if wanted and (not root or all_ids):
        wanted.add("user")
    degraded: dict[str, str] = {}
    if leased and wanted:  # the build sees the same ids on every run
        refused = userns.identity_map_refused()
        if refused is None:
            who = who.mapped_inside()
        else:
            degraded["identity"] = refused
    hostname, kept_because = plan_hostname(policy.hostname) if "uts" in wanted else (
        None, None)
    mounts = None
    env = dict(request.env)
    if policy.filesystem:
        mounts = plan_mounts(
            readonly=(*interpreter_paths(), *policy.readonly),
            writable=policy.writable,
            masked=policy.masked,
            identity=who,
            tmpfs_size=policy.limits.memory,
        )
        env.update(HOME=who.home, USER=who.name, LOGNAME=who.name, TMPDIR="/tmp")
        if policy.record_attempts and "net" in wanted:  # else a real server could get one
            mounts = with_decoys(mounts, decoy_contents(run_token()), DECOY_DIRECTORIES,
                                 RESOLV_CONF)
    return SandboxPlan(
        request=request,
        namespaces=frozenset(wanted),
        identity=who,
        leased=leased,
        root=root,
        hostname=hostname,
        mounts=mounts,
        env=env,
        seccomp_program=_seccomp_program() if policy.seccomp else None,
        degraded={**degraded, "hostname": kept_because} if kept_because else degraded,
    )


def _plan_run(sandbox: SandboxPlan, launch: Launch, lease: identity.Lease | None, *,
              all_ids: bool) -> _Run:
    policy = sandbox.policy
    namespaces = sandbox.namespaces
    adopts = launch.setup.subreaper
    try:
        # last: nothing after it can fail; the launch's limits count its own processes
        cgroup = _limit_cgroup(policy, launch.confinement.limits, sandbox.identity,
                               sandbox.root, "pid" in namespaces or adopts)
    except BaseException:
        for fd in launch.fds:
            os.close(fd)
        raise
    watch = _plan_watch(policy, namespaces, cgroup, descendants=adopts)._replace(
        decoy_fd=_decoy_instance(launch.setup))
    plan = InitPlan(launch.setup, launch.confinement, launch.command, watch)
    watch_fds = tuple(fd for fd in (watch.cgroup_usage_fd, watch.decoy_fd) if fd is not None)
    return _Run(
        request=sandbox.request,
        plan=plan,
        layers=(*_layers(policy, namespaces, sandbox.leased, cgroup, watch.monitor,
                         hostname=sandbox.hostname), *launch.layers,
                *_attempt_layers(launch)),
        supervisor_flags=namespace_flags(namespaces & SUPERVISOR_NAMESPACES),
        mounts=sandbox.mounts,
        all_ids=all_ids,
        degraded={**sandbox.degraded, **launch.degraded, **_unrecorded(policy, launch, namespaces)},
        lease=lease,
        cgroup=cgroup,
        fds=(*launch.fds, *watch_fds),
        scratch=launch.scratch,
    )


def _decoy_instance(setup: SetUp) -> int | None:
    """The inotify instance the init watches the decoys with, where there are decoys: the
    caller's, so that the last reference, closed after the run, is the caller's; None where
    the caller cannot have one (the init then makes its own)."""
    if not setup.decoys:
        return None
    try:
        return inotify.new_instance()
    except OSError:
        return None


def _close_later(fd: int) -> None:
    """Close *fd* from a thread of its own: the last reference to an inotify instance
    waits for the kernel to destroy its watches (7-15 ms), which no run need wait for."""
    def close() -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    try:
        threading.Thread(target=close, name="buildjail-close", daemon=True).start()
    except RuntimeError:  # no thread to be had (a pids limit reached, interpreter shutdown):
        close()  # close it here, or the rest of the run's release would never happen


def _attempt_layers(launch: Launch) -> tuple[str, ...]:
    """``attempts:credentials``, ``attempts:dns`` and ``attempts:outlived``, where the init
    records them; ``attempts:exec`` and ``attempts:connect``, where the supervisor does."""
    recorded = {*_init_kinds(launch.setup), *(CALL_KINDS if launch.setup.record_calls else ())}
    return tuple(f"attempts:{kind}" for kind in attempts.KINDS if kind in recorded)


def _init_kinds(setup: SetUp) -> tuple[str, ...]:
    """The kinds of attempt the init records for *setup*, sent in its own report."""
    recorded = (("credentials", bool(setup.decoys)), ("dns", setup.dns_trap),
                ("outlived", setup.record_leftovers))
    return tuple(kind for kind, on in recorded if on)


def _without_the_init_report(outcome: Outcome, setup: SetUp, why: str) -> Outcome:
    """*outcome* of a run whose init died before its report (killed on the wall time or a
    limit), saying what the init recorded is lost: never an empty record that looks clean."""
    lost = {f"attempts:{kind}": f"not recorded in full: {why}" for kind in _init_kinds(setup)}
    if lost:
        outcome["unrecorded"] = lost
    return outcome


NO_NETWORK_NAMESPACE = ("not recorded: the sandbox shares the host's network, where a real "
                        "server would be sent a decoy (no decoys planted)")
NO_ADOPTER = ("not recorded: nothing in the sandbox adopts what the command leaves running "
              "(no pid namespace with its own /proc, no kill_all)")


def _unrecorded(policy: Policy, launch: Launch, namespaces: frozenset[str]) -> dict[str, str]:
    """The kinds of attempt the policy records that this launch cannot: never silent."""
    if not policy.record_attempts:
        return {}
    recorded = set(_attempt_layers(launch))
    why = {"attempts:credentials": NO_NETWORK_NAMESPACE} if "net" not in namespaces else {}
    why["attempts:outlived"] = NO_ADOPTER
    return {f"attempts:{kind}": launch.degraded.get(
                f"attempts:{kind}",
                why.get(f"attempts:{kind}", "not recorded: the backend has no place to record it"))
            for kind in attempts.KINDS if f"attempts:{kind}" not in recorded}


def _plan_watch(policy: Policy, namespaces: frozenset[str], cgroup: cgroups.Cgroup | None,
                *, descendants: bool = False) -> Watch:
    """How the init watches the command: its monitor needs the sandbox's pids and mounts,
    or (*descendants*) counts what the init adopted, in no namespace of its own."""
    limits = policy.limits
    monitor = (bool(limits.memory or limits.processes or limits.cpu_time)
               and ({"pid", "mount"} <= namespaces or descendants))
    if cgroup is None:
        return Watch(monitor=monitor, descendants=descendants)
    # The cgroup counts processes, memory and (mostly) CPU time; the monitor still adds
    # the memory of socket buffers, which a v1 cgroup does not all charge, to its usage
    # (where the sandbox has a network namespace whose buffers are its own).
    usage = cgroup.open_usage() if limits.memory and not descendants else None
    cpu_left = bool(limits.cpu_time) and not cgroup.counts_cpu
    return Watch(monitor=monitor and (usage is not None or cpu_left), cgroup_enforced=True,
                 cgroup_usage_fd=usage, descendants=descendants)


def _check_paths(policy: Policy, cwd: str) -> None:
    for kind, paths in (("writable", policy.writable), ("read-only", policy.readonly)):
        for path in paths:
            if not os.path.exists(path):
                raise SandboxSetupError(f"the {kind} path {path} does not exist",
                                        "create it first, or fix the path")
            if kind == "writable" and os.path.islink(path):
                raise SandboxSetupError(f"the writable path {path} is a symbolic link",
                                        "pass the directory it points to")
    if not os.path.isdir(cwd):
        raise SandboxSetupError(f"the working directory {cwd} does not exist",
                                "pass an existing directory as cwd")


def _lease(request: Request) -> identity.Lease:
    """The run's own hold on an identity: a fresh one, or the caller's borrowed."""
    return request.lease.borrow() if request.lease is not None else identity.acquire()


def _identity(lease: identity.Lease | None) -> identity.Identity:
    if lease is not None:
        return lease.identity
    return identity.Identity(uid=os.getuid(), gid=os.getgid())


def _limit_cgroup(policy: Policy, limits: Limits, who: identity.Identity,
                  root: bool, own_pids: bool) -> cgroups.Cgroup | None:
    """The cgroup enforcing the memory and process limits: always when the policy requires
    one (or the run fails), by default wherever one can be had (root, a writable cgroup)."""
    if policy.cgroup_limits is False or not (limits.memory or limits.processes) or not own_pids:
        return None
    if policy.cgroup_limits is None:
        return _create_cgroup(limits, who) if root else None
    if not root:
        raise SandboxSetupError(
            "cgroup limits were requested, but buildjail creates cgroups only as root",
            "run as root, or set cgroup_limits = false (rlimits and the in-sandbox monitor "
            "then enforce the memory and process limits)",
        )
    cgroup = _create_cgroup(limits, who)
    if cgroup is None:
        raise SandboxSetupError(
            "cgroup limits were requested, but no memory and pids cgroup can be created here",
            "mount cgroup v2 with the memory and pids controllers delegated (or v1 "
            "controllers), or set cgroup_limits = false",
        )
    return cgroup


def _create_cgroup(limits: Limits, who: identity.Identity) -> cgroups.Cgroup | None:
    name = f"buildjail-{who.uid}" if who.uid else f"buildjail-{os.getpid()}-{next(_counter)}"
    # RLIMIT_NPROC counts the same processes (the init and the build, one uid) and is checked
    # before pids.max, which alone reports a hit: one less, so pids.max is reached first.
    processes = limits.processes - 1 if limits.processes else None
    return cgroups.create(name, limits.memory, processes, limits.cpu_time)


def _layers(policy: Policy, namespaces: frozenset[str], ephemeral: bool,
            cgroup: cgroups.Cgroup | None, monitor: bool, *,
            hostname: str | None) -> tuple[str, ...]:
    layers = [f"namespace:{name}" for name in sorted(namespaces)]
    if "net" in namespaces:
        layers.append("network:loopback-only")
    if "uts" in namespaces:
        layers.append(f"hostname:{hostname}" if hostname is not None else DEGRADED_LAYER)
    checks = (
        (policy.filesystem, "filesystem"),
        (ephemeral, "identity:ephemeral"),
        (not ephemeral and "user" in namespaces and policy.ephemeral_identity,
         "identity:user-namespace"),
        (policy.env_keep != ("*",) or bool(policy.env_delete), "environment"),
        (policy.no_new_privs, "no_new_privs"),
        (policy.drop_capabilities, "capabilities"),
        (policy.seccomp, "seccomp"),
        (policy.new_session, "session"),
        (policy.kill_all, "kill_all"),
        (bool(policy.limits.processes or policy.limits.file_size), "limits:rlimit"),
        (cgroup is not None, f"limits:cgroup-v{cgroup.version}" if cgroup else ""),
        (monitor, "limits:monitor"),
        (policy.limits.wall_time is not None, "limits:wall_time"),
    )
    layers += [name for enabled, name in checks if enabled]
    return tuple(layers)


def _execute(run: _Run) -> Outcome:
    report_r, report_w = os.pipe()
    life_r, life_w = os.pipe()
    pidfd = None
    try:
        wanted = run.request.fork_server
        if _through_server(wanted):
            from . import _forkserver  # only where a server is wanted: `run` starts fast

            pidfd = _forkserver.start_supervisor(run, report_w, life_r,
                                                 required=wanted is True)
        pid = _fork_supervisor(run, report_r, report_w, life_r, life_w) if pidfd is None else 0
    except BaseException:
        for fd in (report_r, life_w):
            os.close(fd)
        raise
    finally:
        os.close(report_w)
        os.close(life_r)
    data, interrupted = _read_all(report_r, life_w)
    if pidfd is None:
        _wait(pid)
    else:
        _wait_pidfd(pidfd)
    if interrupted is not None:
        raise interrupted
    return _outcome(data)


FORK_SERVER_RSS = 48 << 20
"""The caller's resident memory from which ``fork_server=None`` forks through the server:
measured, the two cost about the same from 20 to 50 MB resident, and below it the
server's one-time start (~100 ms) would not pay back (README, Performance)."""


def _through_server(wanted: bool | None) -> bool:
    """Whether this run's supervisor is forked by the fork server (*wanted* None: where the
    caller is large enough for its own fork to cost more)."""
    if wanted is not None:
        return wanted
    try:
        with open("/proc/self/statm", "rb") as stream:
            resident = int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return False
    return resident >= FORK_SERVER_RSS


def _fork_supervisor(run: _Run, report_r: int, report_w: int, life_r: int,
                     life_w: int) -> int:
    """Fork the supervisor from the caller itself: its pid."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)  # until the child ignores
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.close(report_r)
                os.close(life_w)
                _supervise(run, report_w, life_r, blocked)
            finally:
                os._exit(EXIT_SETUP_FAILED)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pid


def _read_all(fd: int, lifeline: int) -> tuple[bytes, KeyboardInterrupt | None]:
    """Read the supervisor's report; on Ctrl-C cut the lifeline so it stops the sandbox."""
    chunks: list[bytes] = []
    interrupted: KeyboardInterrupt | None = None
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except KeyboardInterrupt as error:
                interrupted = error
                with contextlib.suppress(OSError):
                    os.close(lifeline)
                continue
            if not chunk:
                return b"".join(chunks), interrupted
            chunks.append(chunk)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.close(lifeline)


def _wait(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except KeyboardInterrupt:
            continue
        except ChildProcessError:
            return


def _wait_pidfd(pidfd: int) -> None:
    """Wait for a supervisor that is not this process's child (the server's) to exit."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    try:
        while True:
            try:
                poller.poll()
                return
            except KeyboardInterrupt:
                continue
    finally:
        os.close(pidfd)


def _outcome(data: bytes) -> Outcome:
    result: Outcome | None = None
    for line in data.splitlines():
        message = json.loads(line)
        if "error" in message:
            failure: SetupFailure = message
            raise SandboxSetupError(failure["error"], failure.get("fix", ""))
        result = message
    if result is None or result.get("setup_failed"):
        raise SandboxSetupError("the sandbox supervisor died without a report",
                                "run `buildjail doctor`; this is a bug if it reports no problem")
    return result


def _supervise(
    run: _Run, report_fd: int, lifeline: int, mask: set[int | signal.Signals]
) -> NoReturn:
    """The supervisor: starts the sandbox, enforces the wall time, cleans up, reports."""
    try:
        for number in _INTERRUPTS:
            signal.signal(number, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.setpgid(0, 0)
        # Forked from a thread, this process holds other runs' pipe ends too: drop them, or
        # their callers would wait for this sandbox to end before seeing their own EOF.
        lease_fd = run.lease.lock_fd if run.lease else -1
        k.close_fds_except((report_fd, lifeline, lease_fd, *run.fds, *run.plan.stdio_fds()))
        outcome = _supervise_sandbox(run, report_fd, lifeline)
        os.write(report_fd, json.dumps(outcome).encode() + b"\n")
    except SandboxSetupError as error:
        report_error(report_fd, error.reason, error.fix)
    except OSError as error:
        failure = explain_error(error)
        report_error(report_fd, failure.reason, failure.fix)
    except BaseException as error:
        report_error(report_fd, f"sandbox supervisor failed: {error!r}")
    os._exit(0)


def _supervise_sandbox(run: _Run, report_fd: int, lifeline: int) -> Outcome:
    who = run.plan.confinement.identity
    owners = ownership.lend(run.writable, who.uid, who.gid) if run.lease else None
    started = ownership.changed_since(run.writable)
    offset = changetimes.clock_offset_ns()
    try:
        limits = run.request.policy.limits
        disk = DiskWatch(run.writable, limits.disk, limits.disk_inodes) if run.writable else None
        moves = run.cgroup.open_moves() if run.cgroup is not None else ()
        try:
            return _start_and_watch(run, report_fd, lifeline, disk, moves)
        finally:
            for fd in moves:
                os.close(fd)
            if run.cgroup is not None:
                with contextlib.suppress(OSError):  # here too: the caller may be dead
                    run.cgroup.remove()
    finally:
        started -= changetimes.set_back_since(offset)  # the clock set back meanwhile
        try:
            if owners is not None:
                _hand_back(run, owners, started)
            elif run.writable:
                _normalize(run, started)
        finally:
            for tree in run.scratch:
                remove_tree(tree)


def _hand_back(run: _Run, owners: ownership.Owners, lent_before: int) -> None:
    """Give the writable trees back; contain what could not be (see ownership)."""
    who = run.plan.confinement.identity
    try:
        ownership.hand_back(run.writable, owners, who.uid, os.getuid(), os.getgid(),
                            lent_before=lent_before)
    except ownership.HandBackIncomplete as error:
        if not error.contained:
            identity.quarantine(who.uid)
            raise SandboxSetupError(
                f"files the build made could not all be handed back ({error.strerror}); "
                f"uid {who.uid} is quarantined and will not be used again",
                f"fix the ownership under {', '.join(run.writable)} by hand "
                f"(find -uid {who.uid}), then remove the line from "
                f"{identity.LOCK_DIR}/{identity.QUARANTINE_FILE}",
            ) from None
        raise SandboxSetupError(
            f"files the build made could not all be handed back ({error.strerror}); "
            f"{', '.join(error.unreachable)} made unreachable (mode 000), so uid {who.uid} "
            "is free again",
            f"remove what is left under {', '.join(error.unreachable)} "
            f"(find -uid {who.uid}), then restore the mode",
        ) from None


def _normalize(run: _Run, started: int) -> None:
    """As non-root: normalise what the run changed (no set-id files left as the caller)."""
    try:
        ownership.normalize_changed(run.writable, started)
    except ownership.HandBackIncomplete as error:
        raise SandboxSetupError(
            f"the modes of files the build made could not all be normalised "
            f"({error.strerror})",
            f"check the modes under {', '.join(run.writable)} (find -perm /6022)",
        ) from None


def _start_and_watch(run: _Run, report_fd: int, lifeline: int,
                     disk: DiskWatch | None, moves: tuple[int, ...] = ()) -> Outcome:
    """Fork the init, have it in the run's cgroup (*moves*, from ``Cgroup.open_moves``)
    before it spawns anything, and watch it to its end.

    On v1 the init moves itself in first (``cgroups.join``: no global lock, no wait). On v2
    the supervisor moves it, which waits out an RCU grace period after an idle spell: made
    while the init makes its namespaces and mounts, the init spawning nothing before it is
    told it is in (*placed*), never before.
    """
    if run.supervisor_flags & k.CLONE_NEWUSER:
        userns.unshare_user(run.supervisor_flags & ~k.CLONE_NEWUSER, all_ids=run.all_ids)
    elif run.supervisor_flags:
        k.unshare(run.supervisor_flags)
    adopts = run.plan.setup.subreaper
    if adopts:  # no pid namespace: what outlives the init (killed, or killed by the build)
        k.prctl(k.PR_SET_CHILD_SUBREAPER, 1)  # comes to the supervisor, which kills it
    stderr_size = _regular_file_size(_stderr_fd(run.plan))
    status_r, status_w = os.pipe()
    mapping = _identity_mapping(run.plan.confinement)
    calls_ours, calls_theirs = (socket.socketpair() if run.plan.setup.record_calls
                                else (None, None))
    joins = moves if run.cgroup is not None and run.cgroup.joined_from_inside else ()
    placed_r, placed_w = os.pipe() if moves and not joins else (None, None)
    init = os.fork()
    if init == 0:
        try:  # never unwind into the supervisor's (or the caller's) code
            os.close(status_r)
            os.close(lifeline)
            if placed_w is not None:
                os.close(placed_w)
            run_init(run.plan, report_fd, status_w,
                     None if mapping is None else mapping.init_ends(),
                     None if calls_theirs is None else calls_theirs.fileno(), placed_fd=placed_r,
                     joins=joins)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    os.close(status_w)
    if placed_r is not None:
        os.close(placed_r)
    calls = None
    if calls_ours is not None and calls_theirs is not None:
        calls_theirs.close()
        who = run.plan.confinement.identity
        calls = CallRecorder(calls_ours, (run.plan.command.argv, run.request.argv),
                             (who.uid, who.gid) if os.geteuid() == 0 != who.uid else None)
    try:
        if mapping is not None:
            mapping.started()
        if placed_w is not None:  # the supervisor itself never is in it: never a victim
            _place_init(moves, init, placed_w)
        status_reader = _StatusReader(status_r)
        stopped = _watch(init, lifeline, run, disk, mapping, status=status_reader, calls=calls)
    except BaseException:
        # Whatever went wrong here, nothing of the sandbox may outlive this: the hand-back
        # that follows must never race a live build.
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)
        if adopts:
            _kill_adopted()
        raise
    _, wait_status = os.waitpid(init, 0)
    if adopts:
        _kill_adopted()
    status = status_reader.finish()
    if stopped == "wall_time":
        timed_out: Outcome = {"exit_code": EXIT_TIMEOUT, "limit": "wall_time",
                              "signal": signal.SIGKILL}
        return _with_calls(_without_the_init_report(
            timed_out, run.plan.setup, "the wall time ran out before the init's report"), calls)
    if not status:  # the init died before reporting: a set-up failure, or killed
        if os.waitstatus_to_exitcode(wait_status) == EXIT_SETUP_FAILED:
            return {"exit_code": EXIT_SETUP_FAILED, "setup_failed": True}
        limit = stopped or (run.cgroup.limit_hit() if run.cgroup else None)
        killed: Outcome = {"exit_code": 128 + signal.SIGKILL, "limit": limit,
                           "signal": signal.SIGKILL}
        return _with_calls(_without_the_init_report(
            killed, run.plan.setup, "the sandbox's init was killed before its report"), calls)
    child: InitStatus = json.loads(status)
    code = os.waitstatus_to_exitcode(child["status"])
    limit = stopped or child["limit"] or (run.cgroup.limit_hit() if run.cgroup else None)
    if child.get("started") is False and limit is None:
        raise _wrapper_failed(run, code, stderr_size)
    outcome: Outcome = ({"exit_code": 128 - code, "limit": limit, "signal": -code} if code < 0
                        else {"exit_code": code, "limit": limit})
    for key in ("attempts", "attempts_omitted", "unrecorded"):
        if key in child:
            outcome[key] = child[key]
    return _with_calls(outcome, calls)


def _place_init(procs: tuple[int, ...], init: int, placed: int) -> None:
    """Move the *init* into the run's cgroup and tell it so (a byte on *placed*); an init
    that ended already is left to its report."""
    try:
        cgroups.place(procs, init)
        os.write(placed, b"x")
    except (ProcessLookupError, BrokenPipeError):
        pass
    finally:
        os.close(placed)


def _with_calls(outcome: Outcome, calls: CallRecorder | None) -> Outcome:
    """*outcome* with the programs and connections the supervisor recorded (also where the
    init was killed before its own report: what the supervisor saw is not lost with it)."""
    if calls is not None:
        calls.fill(outcome)
    return outcome


class _StatusReader:
    """The init's status pipe, read while the init runs: a report of many attempts is
    larger than a pipe holds, and the init must never block on it."""

    LIMIT = 4 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        self.size = 0
        os.set_blocking(fd, False)

    def drain(self) -> None:
        """Read what the pipe holds now."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            if self.size < self.LIMIT:
                self.chunks.append(chunk)
            self.size += len(chunk)

    def finish(self) -> bytes:
        """Everything the init wrote (it has exited); the pipe closed."""
        self.drain()
        os.close(self.fd)
        return b"".join(self.chunks) if self.size <= self.LIMIT else b""


def _kill_adopted() -> None:
    """Kill and reap every process this supervisor adopted, until none is left.

    Only its own children are signalled: their pids stay theirs until reaped, so no other
    process can be hit. A killed child's children come to it before its death is reported,
    so each round finds them.
    """
    while True:
        for pid in children(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _stderr_fd(plan: InitPlan) -> int:
    stderr = plan.command.stdio[2]
    return stderr if stderr is not None else 2


def _regular_file_size(fd: int) -> int | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _wrapper_failed(run: _Run, code: int, stderr_size: int | None) -> SandboxSetupError:
    """The set-up failure of a sandbox tool, with its own message when stderr is a file."""
    tool = os.path.basename(run.plan.command.argv[0])
    message = _appended_lines(_stderr_fd(run.plan), stderr_size, f"{tool}: ")
    where = f": {message}" if message else "; its message is on the command's standard error"
    return SandboxSetupError(
        f"{tool} could not set up the sandbox or start the command (exit {code}){where}",
        "check the command and the paths exist and are visible in the sandbox, "
        "and run `buildjail doctor`, which checks every backend on this host",
    )


def _appended_lines(fd: int, offset: int | None, prefix: str) -> str:
    """The lines starting with *prefix* written to the regular file *fd* since *offset*."""
    if offset is None:
        return ""
    try:
        with open(f"/proc/self/fd/{fd}", "rb") as stream:
            stream.seek(offset)
            text = stream.read(4096).decode(errors="replace")
    except OSError:
        return ""
    found = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
    return "; ".join(found)


def _identity_mapping(confinement: Confinement) -> userns.IdentityMapping | None:
    """The handshake that maps the init's last user namespace, where it makes one."""
    if not confinement.map_identity:
        return None
    who = confinement.identity
    return userns.IdentityMapping(f"{who.inside_uid} {who.uid} 1\n",
                                  f"{who.inside_gid} {who.gid} 1\n")


def _watch(init: int, lifeline: int, run: _Run, disk: DiskWatch | None,
           mapping: userns.IdentityMapping | None = None, *,
           status: _StatusReader | None = None, calls: CallRecorder | None = None) -> str | None:
    """Wait for the init to exit; kill it on timeout, a limit or the caller's death.

    Meanwhile answer the init's *mapping* request, when it makes one, and the calls the
    recording filter stopped (*calls*).
    """
    wall_time = run.request.policy.limits.wall_time
    deadline = None if wall_time is None else time.monotonic() + wall_time
    pidfd = os.pidfd_open(init)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(lifeline, select.POLLIN)
    if mapping is not None:
        poller.register(mapping.ask_r, select.POLLIN)
    if status is not None:
        poller.register(status.fd, select.POLLIN)
    recording = _CallsPoll(poller, calls)
    checked = time.monotonic()
    reason: str | None = None
    memory = run.request.policy.limits.memory
    # In no namespace of its own, only the supervisor sees the sandbox's unix socket
    # buffers, which no cgroup charges; without a cgroup, its resident memory too.
    adopted_memory = memory if run.plan.setup.subreaper else None
    usage_fd = None
    if adopted_memory and run.cgroup is not None:
        with contextlib.suppress(OSError):  # then the resident memory is counted instead
            usage_fd = run.cgroup.open_usage()
    try:
        while True:
            timeout = _next_timeout(deadline, run.cgroup is not None or disk is not None
                                    or adopted_memory is not None)
            events = dict(poller.poll(timeout))
            woken = bool(events)
            recording.handle(events)
            if status is not None and status.fd in events:
                status.drain()
                if events.pop(status.fd) & select.POLLHUP:
                    poller.unregister(status.fd)
            now = time.monotonic()
            if woken and not events and now - checked < _WATCH_TICK and (
                    deadline is None or now < deadline):
                continue  # a flood of recorded calls never starves the checks below
            checked = now
            if mapping is not None and mapping.ask_r in events:
                poller.unregister(mapping.ask_r)
                mapping.serve(init)
                mapping = None
                continue
            if pidfd in events:
                return None
            if lifeline in events:
                reason = "interrupted"
            elif deadline is not None and time.monotonic() >= deadline:
                reason = "wall_time"
            else:
                reason = run.cgroup.limit_hit() if run.cgroup is not None else None
                if reason is None and disk is not None and _disk_over(disk, init):
                    reason = "disk"
                if reason is None and adopted_memory is not None and (
                        _adopted_memory(init, usage_fd, run.plan.confinement.identity.uid)
                        > adopted_memory):
                    reason = "memory"
            if reason is not None:
                os.kill(init, signal.SIGKILL)
                return None if reason == "interrupted" else reason
    finally:
        os.close(pidfd)
        if usage_fd is not None:
            os.close(usage_fd)
        if mapping is not None:
            mapping.close()
        if calls is not None:
            calls.close()


class _CallsPoll:
    """The recorder's descriptor in the supervisor's poll: the channel, then the listener."""

    def __init__(self, poller: select.poll, calls: CallRecorder | None) -> None:
        self.poller = poller
        self.calls = calls
        self.fds = calls.fds() if calls is not None else []
        for fd in self.fds:
            poller.register(fd, select.POLLIN)

    def handle(self, events: dict[int, int]) -> None:
        """Answer what the recorder's descriptor reported, and take it out of *events*."""
        if self.calls is None:
            return
        for fd in self.fds:
            if fd in events:
                self.calls.ready(events.pop(fd))
        now = self.calls.fds()
        for fd in set(self.fds) - set(now):
            self.poller.unregister(fd)
        for fd in set(now) - set(self.fds):
            self.poller.register(fd, select.POLLIN)
        self.fds = now


def _adopted_memory(init: int, cgroup_usage: int | None, uid: int) -> int:
    """What a sandbox in no namespace of its own holds, counted from outside (the init may
    not open the netlink socket that reports socket buffers): the buffers of its unix
    sockets, and the cgroup's usage or else its processes' resident memory.

    Its sockets are those its uid made where it has a uid of its own (root's leased one:
    a container's root may lack CAP_SYS_PTRACE to list another uid's descriptors), else
    those its processes hold descriptors of.
    """
    pids = list(descendants(init))
    sockets = (usage.unix_socket_memory(uid=uid) if uid != os.getuid()
               else usage.unix_socket_memory(usage.held_sockets(pids)))
    if cgroup_usage is not None:
        try:
            held = int(os.pread(cgroup_usage, 64, 0))
        except (OSError, ValueError):
            held = 0
    else:
        held = sum(usage.process_memory(str(pid)) for pid in pids)
    return held + sockets


def _disk_over(disk: DiskWatch, init: int) -> bool:
    """The disk watch's verdict; a watch that fails (the build made its trees unreadable to
    it, say) stops the build rather than letting it write unwatched."""
    try:
        return disk.over(init)
    except Exception:
        return True


_WATCH_TICK = 0.05
"""How often the supervisor checks the wall time, the cgroup and the disk while it waits."""


def _next_timeout(deadline: float | None, ticking: bool) -> int | None:
    candidates = []
    if deadline is not None:
        candidates.append(max(0.0, deadline - time.monotonic()))
    if ticking:
        candidates.append(_WATCH_TICK)
    return int(min(candidates) * 1000) + 1 if candidates else None
