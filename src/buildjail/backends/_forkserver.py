"""The fork server: a small process that forks each run's supervisor, so that a run's cost
does not grow with the caller's memory.

Forking copies the caller's page tables: a 1 GB caller (fromager's process) pays several
times a small one's per run. The server is started once per caller process, from the
interpreter's own executable (``python -I -c``: no ``PYTHON*`` variables, no user site, no
current directory on the path), with buildjail's own location put on ``sys.path``; it
imports only the supervisor and what it needs, runs in its own session with its standard
streams on ``/dev/null`` and ``/`` as its directory, and ignores the terminal's signals.

Per run the caller still does all the planning (``_supervisor._prepare``); it then hands the
server a :class:`Handoff` (the planned run, the numbers the supervisor expects its
descriptors at, the umask), pickled over a private socket pair, with the descriptors
themselves attached (``SCM_RIGHTS``). The server forks the supervisor, which puts the
descriptors back at their numbers, and answers ``ok PID`` with a pidfd of it. The caller
reads the report pipe and cuts the lifeline as it always did, and waits for the supervisor
through that pidfd; the server reaps it. The server exits when its socket reaches EOF: the
caller is gone.

Trust: the server is buildjail's own code and runs nothing a build influenced. It reads
plans only from its socket pair, made by the caller and never named (no path, no abstract
address, so nobody else can connect); the caller's end is close-on-exec, dropped in every
forked child of the caller (:func:`os.register_at_fork`), and closed in every supervisor
by ``close_fds_except``, so no build can reach it. (``SO_PEERCRED`` would say only who made
the pair — the caller — and is not checked.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pickle
import resource
import select
import signal
import socket
import struct
import sys
import threading
from typing import TYPE_CHECKING

from .._linux.procfs import read_setting, status_fields
from ..errors import EXIT_SETUP_FAILED, SandboxSetupError

if TYPE_CHECKING:
    from ._supervisor import _Run

MAX_FDS = 253
"""The most descriptors one ``SCM_RIGHTS`` message carries (the kernel's SCM_MAX_FD); a run
that needs more is forked directly."""
_SERVER_FD = 3
_HEADER = struct.Struct("!Q")
_IGNORED = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
_BLOCKED = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
_BOOT = (
    "import sys; sys.path.insert(0, {path!r}); "
    "from buildjail.backends._forkserver import serve; serve()"
)


@dataclasses.dataclass(frozen=True)
class Handoff:
    """What the supervisor needs from its caller, beyond the descriptors sent beside it."""

    run: _Run
    report_fd: int
    lifeline: int
    umask: int
    targets: tuple[int, ...]
    """The number each sent descriptor takes in the supervisor, in the order sent."""
    inheritable: tuple[bool, ...]
    """Whether each sent descriptor is inheritable in the caller (and so in the supervisor)."""
    closed: tuple[int, ...] = ()
    """Standard streams the caller does not have open: closed in the supervisor too."""


# --- the caller's side -------------------------------------------------------------------


class _Server:
    """One running server, as its caller sees it."""

    def __init__(self) -> None:
        self.owner = _owner()
        self.lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.pid = _spawn(theirs.fileno())
        finally:
            theirs.close()
        self.sock = ours
        try:
            if _receive_exactly(ours, 5) != b"ready":
                raise OSError("the fork server did not start")
        except BaseException:
            ours.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def start(self, handoff: Handoff, fds: list[int]) -> int:
        """Hand *handoff* over; the supervisor's pidfd. OSError before anything was sent."""
        payload = pickle.dumps(handoff, protocol=pickle.HIGHEST_PROTOCOL)
        socket.send_fds(self.sock, [_HEADER.pack(len(payload))], fds, socket.MSG_NOSIGNAL)
        try:
            self.sock.sendall(payload, socket.MSG_NOSIGNAL)
            reply, pidfds, _, _ = socket.recv_fds(self.sock, 256, 1)
        except OSError as error:
            raise _HandoffError(f"the fork server failed during the hand-off: {error}") from None
        if not reply.startswith(b"ok ") or len(pidfds) != 1:
            for fd in pidfds:
                os.close(fd)
            what = reply.decode(errors="replace") or "it exited"
            raise _HandoffError(f"the fork server could not start the supervisor: {what}")
        return pidfds[0]


class _HandoffError(Exception):
    """The server failed after the hand-off began: the run cannot be retried."""


class _Current:
    """This process's server (None before the first or after a failure), and its lock."""

    def __init__(self) -> None:
        self.server: _Server | None = None
        self.lock = threading.Lock()

    def forget_in_child(self) -> None:
        """In a forked child: the parent's server is not this process's (its own starts
        anew): the child's copy of the socket is closed, never shut down."""
        self.lock = threading.Lock()
        if self.server is not None:
            with contextlib.suppress(OSError):
                os.close(self.server.sock.detach())
            self.server = None

    def get(self) -> _Server:
        """The server, started (again) where there is none for this pid and these ids."""
        with self.lock:
            if self.server is not None and self.server.owner != _owner():
                self.server.close()
                self.server = None
            if self.server is None:
                self.server = _Server()
            return self.server

    def drop(self, server: _Server) -> None:
        """Never use *server* again (its stream is out of step, or it is gone)."""
        with self.lock:
            if self.server is server:
                self.server = None
        server.close()


_current = _Current()
os.register_at_fork(after_in_child=_current.forget_in_child)


def _owner() -> tuple[object, ...]:
    """What a server must share with its caller to start the caller's runs: the pid, the
    ids, and the standing a forked supervisor would inherit and the server keeps from its
    start (capabilities, no_new_privs, seccomp, namespaces, cgroups, resource limits).

    When any of it changed (a caller that dropped privileges, confined itself or moved),
    the server is replaced, so no run starts with more than the caller has now.
    """
    status = status_fields()
    return (os.getpid(), *os.getresuid(), *os.getresgid(),
            *(status.get(name) for name in _STANDING_FIELDS),
            *(_link(f"/proc/self/ns/{name}") for name in _NAMESPACES),
            read_setting("/proc/self/cgroup"),
            *(resource.getrlimit(limit) for limit in _RLIMITS))


_STANDING_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                    "Seccomp", "Seccomp_filters")
_NAMESPACES = ("user", "mnt", "pid", "pid_for_children", "net", "ipc", "uts", "cgroup")
_RLIMITS = tuple(getattr(resource, name) for name in dir(resource)
                 if name.startswith("RLIMIT_"))


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def server_pid() -> int | None:
    """The pid of this process's running server, if it started one (for tests)."""
    server = _current.server
    return server.pid if server is not None and server.owner == _owner() else None


def start_supervisor(run: _Run, report_fd: int, lifeline: int, *,
                     required: bool = True) -> int | None:
    """Start *run*'s supervisor through the server: its pidfd, or None where the run needs
    more descriptors than one message carries, or (not *required*) where no server can be
    started: the caller then forks it itself.

    The supervisor gets *report_fd*, *lifeline* and every descriptor the run holds at the
    same numbers; the server is restarted once when it died before the hand-off.
    """
    wanted = _descriptors(run, report_fd, lifeline)
    fds: list[int] = []
    closed: list[int] = []
    for fd in wanted:
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
        else:
            fds.append(fd)
    if len(fds) > MAX_FDS:
        return None
    handoff = Handoff(run=run, report_fd=report_fd, lifeline=lifeline, umask=_umask(),
                      targets=tuple(fds), inheritable=tuple(map(os.get_inheritable, fds)),
                      closed=tuple(fd for fd in closed if fd <= 2))
    for attempt in (1, 2):
        try:
            server = _current.get()
        except OSError as error:
            if not required:
                return None
            raise SandboxSetupError(f"the fork server could not be started: {error}",
                                    "pass fork_server=False to fork the supervisor directly"
                                    ) from None
        try:
            with server.lock:
                try:
                    return server.start(handoff, fds)
                except BaseException:
                    _current.drop(server)  # the stream is out of step now: never use it again
                    raise
        except (BrokenPipeError, ConnectionResetError):
            if attempt == 2:
                raise SandboxSetupError("the fork server died before the hand-off, twice",
                                        "pass fork_server=False, and report this bug"
                                        ) from None
        except OSError as error:  # refused before anything was sent (the descriptors?)
            raise SandboxSetupError(f"the run could not be handed to the fork server: "
                                    f"{error}", "pass fork_server=False") from None
        except _HandoffError as error:
            raise SandboxSetupError(str(error), "run again; pass fork_server=False if it "
                                    "persists, and report this bug") from None
    raise AssertionError("unreachable")


def _descriptors(run: _Run, report_fd: int, lifeline: int) -> tuple[int, ...]:
    lease_fd = run.lease.lock_fd if run.lease is not None else -1
    keep = (0, 1, 2, report_fd, lifeline, lease_fd, *run.fds, *run.plan.stdio_fds())
    return tuple(fd for fd in dict.fromkeys(keep) if fd >= 0)


def _umask() -> int:
    """The caller's umask, read without setting it (``os.umask`` would, for every thread)."""
    value = status_fields().get("Umask")
    if value is None:
        raise SandboxSetupError("this kernel shows no umask in /proc/self/status",
                                "pass fork_server=False")
    return int(value, 8)


def _spawn(fd: int) -> int:
    """Start the server with *fd* as its socket, as no child of the caller's (so nothing the
    caller waits for, or counts as its descendants): the pid it runs as."""
    executable = os.path.abspath(sys.executable) if sys.executable else ""
    if not executable or not os.access(executable, os.X_OK):
        raise OSError(f"no interpreter to start it with (sys.executable is {executable!r})")
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    argv = [executable, "-I", "-c", _BOOT.format(path=package_parent)]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
        (os.POSIX_SPAWN_DUP2, fd, _SERVER_FD),
    ]
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: spawns the server, then exits (it is orphaned)
        code = EXIT_SETUP_FAILED
        try:
            os.close(pid_r)
            os.chdir("/")
            server = os.posix_spawn(executable, argv, dict(os.environ), file_actions=actions,
                                    setsid=True)
            os.write(pid_w, b"%d" % server)
            code = 0
        finally:
            os._exit(code)
    os.close(pid_w)
    try:
        pid = os.read(pid_r, 32)
    finally:
        os.close(pid_r)
        os.waitpid(middle, 0)
    if not pid:
        raise OSError("its interpreter could not be spawned")
    return int(pid)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# --- the server's side -------------------------------------------------------------------


def serve() -> None:
    """The server's main loop: fork a supervisor per hand-off, reap them, exit on EOF."""
    for number in _IGNORED:
        signal.signal(number, signal.SIG_IGN)
    os.closerange(_SERVER_FD + 1, 1 << 20)  # nothing of the caller's but the socket
    from . import _supervisor  # the server's one import of the supervisor, before any fork

    sock = socket.socket(fileno=_SERVER_FD)
    sock.sendall(b"ready")
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    children: dict[int, int] = {}  # pidfd: pid
    while True:
        for fd, _ in poller.poll():
            if fd != sock.fileno():
                poller.unregister(fd)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(children.pop(fd), 0)
                os.close(fd)
                continue
            started = _serve_one(sock, _supervisor)
            if started is None:
                os._exit(0)  # the caller is gone; its supervisors carry on, orphaned
            if started:
                pidfd, pid = started
                children[pidfd] = pid
                poller.register(pidfd, select.POLLIN)


def _serve_one(sock: socket.socket, supervisor: object) -> tuple[int, int] | tuple[()] | None:
    """Serve one hand-off: the new supervisor's pidfd and pid, () when none started, None
    on EOF (or a broken stream)."""
    try:
        header, fds, flags, _ = socket.recv_fds(sock, _HEADER.size, MAX_FDS)
    except OSError:
        return None
    if len(header) != _HEADER.size:
        for fd in fds:
            os.close(fd)
        return None
    try:
        payload = _receive_exactly(sock, _HEADER.unpack(header)[0])
        handoff = pickle.loads(payload)
        if flags & socket.MSG_CTRUNC or len(fds) != len(handoff.targets):
            raise OSError("descriptors were lost on the way")
        pid = _fork_supervisor(handoff, fds, supervisor)
    except Exception as error:  # the caller hears why; the server carries on
        with contextlib.suppress(OSError):
            sock.sendall(f"error {error!r}".encode()[:256], socket.MSG_NOSIGNAL)
        return ()
    finally:
        for fd in fds:
            os.close(fd)
    pidfd = os.pidfd_open(pid)
    with contextlib.suppress(OSError):  # a caller gone meanwhile: EOF comes next
        socket.send_fds(sock, [b"ok %d" % pid], [pidfd], socket.MSG_NOSIGNAL)
    return pidfd, pid


def _fork_supervisor(handoff: Handoff, fds: list[int], supervisor: object) -> int:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)  # until the child ignores
    try:
        pid = os.fork()
        if pid == 0:
            try:
                _place(handoff, fds)
                os.umask(handoff.umask)
                supervisor._supervise(  # type: ignore[attr-defined]
                    handoff.run, handoff.report_fd, handoff.lifeline, blocked)
            finally:
                os._exit(EXIT_SETUP_FAILED)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pid


def _place(handoff: Handoff, fds: list[int]) -> None:
    """In the supervisor: every descriptor at the number the plan expects, as inheritable
    as the caller's; the standard streams the caller had closed closed."""
    above = max((*handoff.targets, *fds, _SERVER_FD)) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target, inheritable in zip(moved, handoff.targets, handoff.inheritable,
                                       strict=True):
        os.dup2(fd, target, inheritable=inheritable)
        os.close(fd)
    for fd in handoff.closed:
        with contextlib.suppress(OSError):
            os.close(fd)

