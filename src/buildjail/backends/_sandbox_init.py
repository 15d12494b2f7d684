"""What runs inside the sandbox: its init process and the command's set-up.

For ``native`` the init builds the sandbox and spawns the command; for ``bwrap`` it confines
itself the same way, keeps only a private ``/proc`` and the staged trees, and spawns
bubblewrap, which builds the sandbox and reports through a JSON status stream.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import resource
import select
import signal
import socket
import threading
from collections.abc import Sequence

from .._linux import cgroups, landlock, seccomp, usage, userns
from .._linux import kernel as k
from .._linux.diagnosis import explain_error  # imported here: the package may be hidden inside
from .._linux.filesystem import SCRATCH_TMPFS, apply_mounts, stage_trees
from .._linux.procfs import descendants
from ..errors import EXIT_SETUP_FAILED  # stdlib-only, and imported before the fork
from ..limits import Limits
from ._calls import KINDS as CALL_KINDS
from ._leftovers import MAX_WALKED, record_leftovers
from ._recorder import Recorder, release_wrapped
from .base import InitPlan

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NoReturn

    from .messages import InitStatus, SetupFailure

_MONITOR_TICK = 0.05
_BESIDE_A_CGROUP_TICK = 0.25
"""Where a cgroup counts memory, the monitor only adds socket buffers: it looks less often."""
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT,
                  signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1)


def report_error(fd: int, reason: str, fix: str = "") -> None:
    """Send a set-up failure to the caller, one JSON line."""
    failure: SetupFailure = {"error": reason, "fix": fix}
    message = json.dumps(failure).encode() + b"\n"
    with contextlib.suppress(OSError):
        os.write(fd, message)


SETTING_UP = "set up the sandbox"


def run_init(plan: InitPlan, report_fd: int, status_fd: int,
             mapping: tuple[int, int] | None = None, calls_fd: int | None = None,
             *, placed_fd: int | None = None, joins: tuple[int, ...] = ()) -> NoReturn:
    """Become the sandbox's init: set up, confine itself, spawn the command, reap, report.

    The init confines itself exactly as the command will be (identity, capabilities,
    no_new_privs, seccomp, rlimits), so the command can be started with ``posix_spawn``
    (vfork + exec) instead of a second fork of this Python process. *mapping*: the ends of
    the supervisor's ``IdentityMapping``, where the identity is mapped. *calls_fd*: the
    socket the recording filter's listener is sent to the supervisor on, where it records
    calls (``SetUp.record_calls``). The init enters the sandbox's cgroup itself through
    *joins* (v1: :func:`cgroups.join`, before anything else), or the supervisor moves it in
    and says so on *placed_fd* (v2).
    """
    stage = SETTING_UP
    try:
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)
        k.close_fds_except((report_fd, status_fd, *plan.stdio_fds(), *_lent_fds(plan),
                            *(mapping or ()), *(() if calls_fd is None else (calls_fd,)),
                            *(() if placed_fd is None else (placed_fd,)), *joins))
        if joins:
            stage = "enter the sandbox's cgroup"
            cgroups.join(joins)
            stage = SETTING_UP
        plan = with_low_descriptors(plan)
        k.scrub_process_memory(b"buildjail-init")
        # Placed by the supervisor meanwhile: the cgroup namespace is made once in the cgroup,
        # rooted at it (made before, it would be rooted at the caller's and show the path).
        later = k.CLONE_NEWCGROUP if placed_fd is not None else 0
        _enter_namespaces(plan, later)
        stage = "record the build's attempts"
        recorder = Recorder(plan.setup, plan.watch.decoy_fd)
        if plan.command.block_fd is None:
            recorder.watch_decoys()
        stage = SETTING_UP
        if plan.setup.subreaper:
            k.prctl(k.PR_SET_CHILD_SUBREAPER, 1)
        wakeup = _watch_children()
        if placed_fd is not None:
            stage = "enter the sandbox's cgroup"
            _wait_until_placed(placed_fd)
            if plan.setup.namespaces & later:
                k.unshare(later)
        stage = "confine the sandbox"
        _confine(plan, mapping)
        stage = "enter the working directory"
        os.chdir(plan.command.cwd)
        stage = "execute"
        child = (_spawn_command(plan) if calls_fd is None
                 else _spawn_recorded(plan, calls_fd, recorder))
        os.close(report_fd)
        wrapper = _WrapperStatus(plan.command.status_fd)
        if plan.command.block_fd is not None:
            _release_wrapper(plan, recorder, wrapper, child)
        status, limit = _reap_until(child, wakeup, plan, wrapper, recorder)
        if plan.setup.record_leftovers:  # also after a limit: its kill gets the grace to end
            _record_leftovers(recorder, wrapper)
        if plan.command.kill_descendants:
            _kill_leftovers()
        recorder.finish()
        report: InitStatus = {"status": status, "limit": limit}
        recorder.fill(report)
        if plan.command.status_fd is not None:
            report["started"] = wrapper.started()
        _write_all(status_fd, json.dumps(report).encode())
    except OSError as error:
        report_error(report_fd, *_setup_error(stage, plan, error))
        os._exit(EXIT_SETUP_FAILED)
    except BaseException as error:
        report_error(report_fd, f"{stage}: {error!r}")
        os._exit(EXIT_SETUP_FAILED)
    os._exit(0)


def _wait_until_placed(placed_fd: int) -> None:
    """Block until the supervisor has moved this init into the sandbox's cgroup, so that
    everything of the build is born in it; OSError where it could not."""
    try:
        answer = os.read(placed_fd, 1)
    finally:
        os.close(placed_fd)
    if answer != b"x":
        raise OSError(errno.EPERM, "the supervisor could not move the sandbox into its cgroup")


def _record_leftovers(recorder: Recorder, wrapper: _WrapperStatus) -> None:
    """Record what the command left running (bubblewrap's init aside); say where the
    record is not whole."""
    if not record_leftovers(recorder.log, (wrapper.child_pid(),), stop_all=True):
        recorder.unrecorded["attempts:outlived"] = (
            f"not recorded in full: more than {MAX_WALKED} processes were left, "
            f"{MAX_WALKED} looked at")


def _write_all(fd: int, data: bytes) -> None:
    """Write all of *data* to the pipe *fd* (a report of many attempts exceeds one write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _release_wrapper(plan: InitPlan, recorder: Recorder, wrapper: _WrapperStatus,
                     child: int) -> None:
    """Watch the decoys bubblewrap made, then let it run the command (its --block-fd)."""
    home = plan.confinement.identity.home
    host_devices = _devices(("/", *SCRATCH_TMPFS, home))
    block_fd = plan.command.block_fd
    assert block_fd is not None

    def running() -> bool:
        return wrapper.drain() or (wrapper.child_pid() is not None and _alive(child))

    release_wrapped(recorder, block_fd, wrapper.child_pid, running,
                    lambda path: bool(_devices((path,))) and not _devices((path,)) & host_devices)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


FD_OPTIONS = frozenset({"--json-status-fd", "--seccomp", "--file", "--ro-bind-data",
                        "--bind-data", "--info-fd", "--sync-fd", "--block-fd"})
"""bubblewrap's options whose value is a descriptor number."""


def with_low_descriptors(plan: InitPlan) -> InitPlan:
    """The plan with every descriptor it hands on moved below any RLIMIT_NOFILE.

    A caller with thousands of descriptors open (fromager, 50 runs at once) lends numbers
    like 1810; once the init lowers RLIMIT_NOFILE to the policy's 1024, posix_spawn refuses
    such numbers (EBADF), and the command could not use them either.
    """
    used = [*plan.stdio_fds(), *_lent_fds(plan)]
    moved: dict[int, int] = {}
    for fd in sorted(set(used)):
        if fd >= _LOW_DESCRIPTORS:
            low = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            if low >= _LOW_DESCRIPTORS:
                raise OSError(errno.EMFILE, "no descriptor below 256 is free to hand on")
            os.close(fd)
            moved[fd] = low
    if not moved:
        return plan

    def new(fd: int) -> int:
        return moved.get(fd, fd)

    def maybe(fd: int | None) -> int | None:
        return None if fd is None else new(fd)

    command = plan.command
    argv = list(command.argv)
    for index in range(1, len(argv)):
        if argv[index - 1] in FD_OPTIONS and argv[index].isdigit():
            argv[index] = str(new(int(argv[index])))
    stdin, stdout, stderr = (maybe(fd) for fd in command.stdio)
    moved_command = command._replace(
        argv=tuple(argv), stdio=(stdin, stdout, stderr),
        inherited_fds=tuple(new(fd) for fd in command.inherited_fds),
        status_fd=maybe(command.status_fd), block_fd=maybe(command.block_fd))
    moved_watch = plan.watch._replace(cgroup_usage_fd=maybe(plan.watch.cgroup_usage_fd),
                                      decoy_fd=maybe(plan.watch.decoy_fd))
    return plan._replace(command=moved_command, watch=moved_watch)


_LOW_DESCRIPTORS = 256


def _confine(plan: InitPlan, mapping: tuple[int, int] | None = None) -> None:
    """Apply rlimits, the identity, the capability drop, no_new_privs, Landlock, seccomp."""
    _set_rlimits(plan.confinement.limits, processes=plan.confinement.process_rlimit)
    if plan.watch.monitor or plan.watch.cgroup_enforced:
        _prefer_as_oom_victim()
    # The ruleset's paths are opened with the caller's rights, before the identity drops.
    ruleset = None
    if plan.confinement.landlock is not None:
        stdio = tuple(i if fd is None else fd for i, fd in enumerate(plan.command.stdio))
        ruleset = landlock.create_ruleset(plan.confinement.landlock, stdio)
    _drop_privileges(plan, mapping)
    k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it: arm it again
    k.prctl(k.PR_SET_DUMPABLE, 0)
    if plan.confinement.no_new_privs:
        k.set_no_new_privs()
    if ruleset is not None:
        landlock.enforce(ruleset)
    if plan.confinement.seccomp_program is not None:
        seccomp.install_filter(plan.confinement.seccomp_program)


def _lent_fds(plan: InitPlan) -> tuple[int, ...]:
    fds = plan.command.inherited_fds
    if plan.watch.cgroup_usage_fd is not None:
        fds = (*fds, plan.watch.cgroup_usage_fd)
    if plan.watch.decoy_fd is not None:
        fds = (*fds, plan.watch.decoy_fd)
    if plan.command.block_fd is not None:
        fds = (*fds, plan.command.block_fd)
    return fds if plan.command.status_fd is None else (*fds, plan.command.status_fd)


def _spawn_command(plan: InitPlan) -> int:
    for fd in plan.command.inherited_fds:
        os.set_inheritable(fd, True)
    moves = [(fd, target) for target, fd in enumerate(plan.command.stdio)
             if fd is not None and fd != target]
    actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in moves]
    # dup2 leaves the original open in the command: close each one above the standard three.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in sorted({fd for fd, _ in moves if fd > 2})]
    return os.posix_spawn(
        _resolve(plan.command.argv[0], plan.command.env.get("PATH", os.defpath)),
        plan.command.argv,
        plan.command.env,
        file_actions=actions,
        setsid=plan.command.new_session,
        setsigdef=_RESET_SIGNALS,
        setsigmask=set(),
    )


def _spawn_recorded(plan: InitPlan, calls_fd: int, recorder: Recorder) -> int:
    """Spawn the command from a thread of its own that installed the recording filter first,
    while this thread, under no such filter, sends its listener to the supervisor: a
    filtered thread's send would stop until the listener it carries was read.

    The thread lives as long as the init: a parent-death signal (bubblewrap's
    ``--die-with-parent``, where it has it) follows the thread that spawned, not the process.
    """
    box: dict[str, int | BaseException] = {}
    installed, sent, spawned = threading.Event(), threading.Event(), threading.Event()

    def spawn() -> None:
        try:
            box["listener"] = seccomp.install_recording_filter(seccomp.build_recording_filter())
        except (OSError, ValueError) as error:
            box["refused"] = error
        installed.set()
        sent.wait()
        try:
            box["pid"] = _spawn_command(plan)
        except BaseException as error:
            box["failed"] = error
        spawned.set()
        threading.Event().wait()  # until the init exits

    thread = threading.Thread(target=spawn, name="buildjail-spawn", daemon=True)
    thread.start()
    installed.wait()
    listener = box.get("listener")
    try:
        if isinstance(listener, int):
            with socket.socket(fileno=os.dup(calls_fd)) as channel:
                socket.send_fds(channel, [b"L"], [listener])
        else:
            why = f"not recorded: the recording filter could not be installed ({box['refused']})"
            for kind in CALL_KINDS:
                recorder.unrecorded[f"attempts:{kind}"] = why
    finally:
        if isinstance(listener, int):
            os.close(listener)
        os.close(calls_fd)
        sent.set()
        spawned.wait()
    failed = box.get("failed")
    if isinstance(failed, BaseException):
        raise failed
    pid = box["pid"]
    assert isinstance(pid, int)
    return pid


def _resolve(command: str, search_path: str) -> str:
    """Find *command* like execvp would, with the sandbox's PATH and identity."""
    if "/" in command:
        return command
    for directory in search_path.split(os.pathsep):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, f"{command} not found in PATH {search_path}")


def _setup_error(stage: str, plan: InitPlan, error: OSError) -> tuple[str, str]:
    if stage == "execute":
        return (f"cannot execute {plan.command.argv[0]!r} in the sandbox: {error.strerror}",
                "check the command exists in the sandbox's view (`buildjail run --explain` "
                "shows it); add its directory with --readonly if the view hides it")
    if stage == "enter the working directory":
        return (f"the working directory {plan.command.cwd} is not reachable in the sandbox: "
                f"{error.strerror}",
                "run from a visible directory, or expose it with --readonly/--writable")
    failure = explain_error(error)
    if stage == SETTING_UP:  # "sandbox not set up: " already says it
        return failure.reason, failure.fix
    return f"{stage}: {failure.reason}", failure.fix


def _enter_namespaces(plan: InitPlan, later: int = 0) -> None:
    """Make the namespaces (but those in *later*), the loopback, the hostname, the view."""
    if plan.setup.namespaces & ~later:
        k.unshare(plan.setup.namespaces & ~later)
    if plan.setup.loopback:
        k.loopback_up()
    if plan.setup.hostname is not None:
        socket.sethostname(plan.setup.hostname)
    if plan.setup.mounts is not None:
        apply_mounts(plan.setup.mounts)
    elif plan.setup.fresh_proc or plan.setup.staged:
        k.make_mounts_private()
        if plan.setup.fresh_proc:
            k.mount_proc()
        stage_trees(plan.setup.staged)


def _watch_children() -> int:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(write_end)
    return read_end


class _WrapperStatus:
    """bubblewrap's JSON status stream, drained as it comes so a build cannot stall it."""

    _KEEP = 65536

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.data = b""
        if fd is not None:
            os.set_blocking(fd, False)

    def drain(self) -> bool:
        """Read what is there; at EOF close the stream and return False (True: still open)."""
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                os.close(self.fd)
                self.fd = None
                return False
            self.data = (self.data + chunk)[: self._KEEP]
        return False

    def child_pid(self) -> int | None:
        """The pid of bubblewrap's init, from its first line (written before the build runs)."""
        first, newline, _ = self.data.partition(b"\n")
        if not newline:
            return None
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return int(json.loads(first)["child-pid"])
        return None

    def started(self) -> bool:
        """Whether bubblewrap finished its set-up and executed the command."""
        self.drain()
        return b'"exit-code"' in self.data


def _reap_until(child: int, wakeup: int, plan: InitPlan, wrapper: _WrapperStatus,
                recorder: Recorder) -> tuple[int, str | None]:
    """Reap every process that exits until *child* does; watch the limits and record the
    attempts meanwhile."""
    poller = select.poll()
    poller.register(wakeup, select.POLLIN)
    if wrapper.fd is not None:
        poller.register(wrapper.fd, select.POLLIN)
    recording = recorder.fds()
    for fd in recording:
        poller.register(fd, select.POLLIN)
    tick = _BESIDE_A_CGROUP_TICK if plan.watch.cgroup_enforced else _MONITOR_TICK
    timeout = int(tick * 1000) if plan.watch.monitor else None
    scratch = plan.setup.mounts.scratch_paths() if plan.setup.mounts else ()
    wrapped = plan.watch.monitor and plan.command.status_fd is not None
    home = plan.confinement.identity.home
    host_devices = _devices(("/", *SCRATCH_TMPFS, home)) if wrapped else set()
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0, None
            if pid == 0:
                break
            if pid == child:
                return status, _limit_from_status(status, plan.confinement.limits)
        for fd, _ in poller.poll(timeout):
            if fd == wakeup:
                os.read(wakeup, 4096)
            elif fd in recording:
                recorder.drain()
                for gone in set(recording) - set(recorder.fds()):  # the recording stopped
                    poller.unregister(gone)
                    recording.remove(gone)
            elif wrapper.fd is not None and not wrapper.drain():
                poller.unregister(fd)
        if wrapped:
            scratch = _wrapped_scratch(wrapper, home, host_devices)
        if plan.watch.monitor:
            limit = _over_limits(plan.confinement.limits, scratch, plan.watch.cgroup_usage_fd,
                                 counted_by_cgroup=plan.watch.cgroup_enforced,
                                 adopted=plan.watch.descendants, own=recorder.sockets())
            if limit:
                os.kill(-1, signal.SIGKILL)
                _, status = os.waitpid(child, 0)
                return status, limit


def _wrapped_scratch(wrapper: _WrapperStatus, home: str,
                     host_devices: set[int]) -> tuple[str, ...]:
    """The wrapped sandbox's own tmpfs mounts, seen through its init's root.

    Until bubblewrap has switched to the new root, those paths are the host's: a path
    counts only once it is on a file system the init does not see.
    """
    pid = wrapper.child_pid()
    if pid is None:
        return ()
    paths = (f"/proc/{pid}/root{path}" for path in (*SCRATCH_TMPFS, home))
    return tuple(path for path in paths if _devices((path,)) - host_devices)


def _devices(paths: tuple[str, ...]) -> set[int]:
    found = set()
    for path in paths:
        with contextlib.suppress(OSError):
            found.add(os.stat(path).st_dev)
    return found


def _limit_from_status(status: int, limits: Limits) -> str | None:
    """SIGXFSZ and SIGXCPU (or a shell's 128 + N) are the file-size and CPU-time limits."""
    code = os.waitstatus_to_exitcode(status)
    if limits.file_size and code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return "file_size"
    if limits.cpu_time and code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "cpu_time"
    return None


def _over_limits(limits: Limits, scratch: tuple[str, ...], usage_fd: int | None = None, *,
                 counted_by_cgroup: bool = False, adopted: bool = False,
                 own: Sequence[socket.socket] = ()) -> str | None:
    """Count the sandbox's processes, its memory of every kind and its CPU time.

    *adopted*: the sandbox is this init's descendants, in the host's pid, IPC and network
    namespaces (whose System V segments and sockets are the host's, not counted). *own*:
    the init's sockets in the sandbox's network namespace (the DNS trap), counted apart.
    """
    me = str(os.getpid())
    if adopted:
        pids = [str(pid) for pid in descendants(os.getpid()) if str(pid) != me]
    else:
        pids = [name for name in os.listdir("/proc") if name.isdigit() and name != "1"]
    if not counted_by_cgroup:
        # RLIMIT_NPROC counts the supervisor and this init too when they share the command's
        # uid (non-root): the command's processes then top out at processes - 2.
        if limits.processes and len(pids) >= limits.processes - 2:
            return "processes"
        # adopted: the supervisor counts the memory, with the socket buffers only it sees
        if limits.memory and not adopted and _memory_held(pids, scratch, own) > limits.memory:
            return "memory"
    elif limits.memory and usage_fd is not None and (
            _read_number(usage_fd) + usage.socket_memory(own) > limits.memory):
        return "memory"
    if limits.cpu_time and usage.cpu_seconds(pids, me) > limits.cpu_time:
        return "cpu_time"
    return None


def _read_number(fd: int) -> int:
    try:
        return int(os.pread(fd, 64, 0))
    except (OSError, ValueError):
        return 0


def _memory_held(pids: list[str], scratch: tuple[str, ...],
                 own: Sequence[socket.socket] = ()) -> int:
    """Resident memory, the sandbox's tmpfs, and what its IPC and network namespaces hold."""
    resident = sum(usage.process_memory(pid) for pid in pids)
    files = sum(usage.tmpfs_used(path) for path in scratch)
    return resident + files + usage.ipc_memory() + usage.socket_memory(own)


def _set_rlimits(limits: Limits, *, processes: bool = True) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.processes and processes:
        _lower_rlimit(resource.RLIMIT_NPROC, limits.processes)
    elif limits.processes:
        # The caller's own uid, in no user namespace of its own: RLIMIT_NPROC counts all of
        # the caller's processes. A backstop above what it runs now; the monitor counts the
        # sandbox's own exactly.
        _lower_rlimit(resource.RLIMIT_NPROC, limits.processes + _processes_of(os.getuid()))
    if limits.file_size:
        _lower_rlimit(resource.RLIMIT_FSIZE, limits.file_size)
    if limits.open_files:
        _lower_rlimit(resource.RLIMIT_NOFILE, limits.open_files)
    if limits.cpu_time:  # one process's share; the monitor or the cgroup counts them all
        _lower_rlimit(resource.RLIMIT_CPU, math.ceil(limits.cpu_time))


def _processes_of(uid: int) -> int:
    """How many processes (threads count, as for RLIMIT_NPROC) run as *uid* now."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(f"/proc/{name}/task")
            if info.st_uid == uid:
                count += max(1, info.st_nlink - 2)
    return count


def _prefer_as_oom_victim() -> None:
    """Let the kernel's OOM killer (a cgroup's, or the host's) pick the build first."""
    with contextlib.suppress(OSError):
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)


def _lower_rlimit(which: int, value: int) -> None:
    """Set soft and hard limit to *value*, or to the hard limit already lower (a container's)."""
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _kill_leftovers() -> None:
    """Kill and reap whatever the command left, detached daemons too (this init adopted
    them). ``kill(-1)`` reaches only the sandbox: the build's identity owns no other
    process, or Landlock scopes its signals to the sandbox (the planner ensures one)."""
    while True:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _enter_as_owner(uid: int, gid: int, mapping: tuple[int, int]) -> None:
    """Make the identity's user namespace with the leased ids as its owner, and enter it.

    The kernel charges what the namespace's users hold (inotify instances, queued signals,
    nested namespaces...) to its owner on the host — the effective uid that makes it: the
    leased uid, never root's own quotas, which a build could otherwise exhaust for the whole
    host. Root's capabilities stay effective for the unshare (hosts that restrict user
    namespaces ask for them); the new namespace then gives every capability, in it only.
    """
    os.setresgid(gid, gid, gid)
    os.setresuid(0, uid, 0)
    k.raise_permitted_capabilities()
    userns.enter_mapped_namespace(mapping)


def _drop_privileges(plan: InitPlan, mapping: tuple[int, int] | None) -> None:
    confinement = plan.confinement
    identity = confinement.identity
    uid, gid = identity.uid, identity.gid
    if confinement.switch_identity:
        os.setgroups([])
        if confinement.map_identity:
            if mapping is None:
                raise OSError(errno.EINVAL, "the identity's user namespace has no mapping")
            _enter_as_owner(uid, gid, mapping)
            uid, gid = identity.inside_uid, identity.inside_gid
    if confinement.drop_capabilities or confinement.map_identity:
        k.drop_bounding_and_ambient()
    if confinement.switch_identity:
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if confinement.drop_capabilities or confinement.map_identity:
        k.clear_capability_sets()
