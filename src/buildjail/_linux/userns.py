"""User namespaces the sandbox starts in when it cannot create namespaces directly.

A non-root caller maps only its own ids. Root without CAP_SYS_ADMIN — root in a default
Podman, Docker or Kubernetes container — cannot create mount, pid or network namespaces
in the container's own user namespace, but it can create a user namespace first and the
others inside it. That namespace maps every id the container has onto itself, so the
ephemeral build identity, the files lent to it and their hand-back are the same ids
inside and outside; only the way the sandbox is set up changes, not what it isolates.

A map of more than the writer's own id needs CAP_SETUID and CAP_SETGID in the *parent*
namespace, which the process that unshared no longer has there: a short-lived helper,
forked before the unshare and left in the parent namespace, writes it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from . import kernel as k
from .procfs import read_setting


def contained_root() -> bool:
    """Whether this is root without CAP_SYS_ADMIN (a container's root): it needs a userns."""
    return os.geteuid() == 0 and not k.has_capability(k.CAP_SYS_ADMIN)


def needs_user_namespace() -> bool:
    """Whether namespaces must be created inside a new user namespace here."""
    return os.geteuid() != 0 or contained_root()


def identity_map(map_path: str) -> str:
    """The map lines giving a child namespace every id of this one, each onto itself."""
    lines = []
    with open(map_path) as stream:
        for line in stream:
            inside, _outside, count = line.split()
            lines.append(f"{inside} {inside} {count}\n")
    return "".join(lines)


def unshare_user(flags: int = 0, *, all_ids: bool) -> None:
    """``unshare(CLONE_NEWUSER | flags)``, then map the caller's ids (or, *all_ids*, all of them).

    The user namespace is created first, so it owns the other namespaces *flags* asks for.
    """
    if not all_ids:
        uid, gid = os.getuid(), os.getgid()  # read before unshare: unmapped ids read 65534
        k.unshare(k.CLONE_NEWUSER | flags)
        k.map_current_ids(uid, gid, uid, gid)
        return
    uid_lines, gid_lines = identity_map("/proc/self/uid_map"), identity_map("/proc/self/gid_map")
    go_r, go_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - a child that never returns
        os.close(go_w)
        _write_maps_when_told(go_r, os.getppid(), uid_lines, gid_lines)
    os.close(go_r)
    try:
        k.unshare(k.CLONE_NEWUSER | flags)
        os.write(go_w, b"1")
    finally:
        os.close(go_w)  # on a failed unshare the helper reads EOF and writes nothing
        code = os.waitstatus_to_exitcode(os.waitpid(helper, 0)[1])
    if code != 0:
        raise OSError(code, "write the uid/gid maps of the user namespace: "
                      f"{os.strerror(code) if code > 0 else 'the helper died'}")


def _write_maps_when_told(go: int, target: int, uid_lines: str, gid_lines: str) -> None:
    """The helper: wait for the unshare, write *target*'s maps, exit with the errno (0: done)."""
    code = 0
    try:
        if os.read(go, 1):
            k.write_id_maps(target, uid_lines, gid_lines)
    except OSError as error:
        code = error.errno or errno.EIO
    except BaseException:
        code = errno.EIO
    os._exit(code)


def namespaces_refused() -> OSError | None:
    """Why this process cannot make the namespaces a sandbox needs, or None when it can.

    A forked child tries what the native backend's set-up starts with: the mount, pid and
    network namespaces (inside a new user namespace where that is needed), and making its
    mounts private — which a user namespace that AppArmor or a container's seccomp profile
    restricts refuses even when the namespace itself was made — and, as pid 1 of the new pid
    namespace, mounting its /proc (which a runtime's masks over /proc refuse).
    """
    flags = k.CLONE_NEWNS | k.CLONE_NEWPID | k.CLONE_NEWNET
    if needs_user_namespace():
        flags |= k.CLONE_NEWUSER

    def try_to_set_up(report_fd: int) -> None:
        k.unshare(flags)
        k.make_mounts_private()
        code = _errno_in_child(k.mount_proc, report_fd, "mount proc: ")  # as pid 1 there
        if code:
            raise OSError(code, "")  # its reason is written already

    read_end, write_end = os.pipe()
    code = _errno_in_child(lambda: try_to_set_up(write_end), write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        message = stream.read(1024).decode(errors="replace")
    return None if code == 0 else OSError(code, message or os.strerror(code))


def _errno_in_child(action: Callable[[], None], report_fd: int, what: str = "") -> int:
    """Run *action* in a forked child: the errno it failed with (0: done), its reason
    written to *report_fd* after *what*."""
    child = os.fork()
    if child == 0:  # pragma: no cover - a child that never returns
        code = 0
        try:
            action()
        except OSError as error:
            code = error.errno or errno.EPERM
            if error.strerror:
                os.write(report_fd, f"{what}{error.strerror}".encode()[:512])
        except BaseException:
            code = errno.EIO
        os._exit(min(code, 255))
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


MAX_USER_NAMESPACES = "/proc/sys/user/max_user_namespaces"


def identity_map_refused() -> str | None:
    """Why the build's identity cannot be seen as fixed ids here (None: it can).

    The host's root needs no user namespace for its sandbox; the one that maps the fixed
    ids onto the leased ones is refused only where user namespaces are turned off.
    """
    if read_setting(MAX_USER_NAMESPACES) == "0":
        return ("the build sees its per-run uid, not a fixed one: user namespaces are "
                f"turned off ({MAX_USER_NAMESPACES} is 0); archives may record that uid")
    return None


class IdentityMapping:
    """The handshake by which the supervisor maps the user namespace the init makes last.

    The init makes it once its mounts are made, so that they stay owned (and locked) by
    the namespace above; it then asks, and blocks. The supervisor, which still holds
    CAP_SETUID and CAP_SETGID above it, writes the one-id maps (the fixed ids the build
    sees onto the leased ones) and answers with an errno, 0 when done. No process is forked.
    """

    def __init__(self, uid_line: str, gid_line: str) -> None:
        self.uid_line, self.gid_line = uid_line, gid_line
        self.ask_r, self.ask_w = os.pipe()
        self.answer_r, self.answer_w = os.pipe()

    def init_ends(self) -> tuple[int, int]:
        """The descriptors the init keeps: where it asks, where the answer comes."""
        return self.ask_w, self.answer_r

    def started(self) -> None:
        """Close the init's ends in the supervisor, once the init is forked."""
        os.close(self.ask_w)
        os.close(self.answer_r)

    def serve(self, pid: int) -> None:
        """Answer the init's request (*pid* asked: its ask end is readable); once only."""
        try:
            if os.read(self.ask_r, 1):
                os.write(self.answer_w, str(self._write_maps(pid)).encode())
        finally:
            self.close()

    def close(self) -> None:
        """Close the supervisor's ends (the init, still waiting, then reads EOF)."""
        for fd in (self.ask_r, self.answer_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _write_maps(self, pid: int) -> int:
        try:
            k.write_id_maps(pid, self.uid_line, self.gid_line, deny_setgroups=True)
        except OSError as error:
            return error.errno or errno.EPERM
        return 0


def enter_mapped_namespace(ends: tuple[int, int]) -> None:
    """In the init: make the user namespace, ask the supervisor to map it, wait for it."""
    ask, answer = ends
    k.unshare(k.CLONE_NEWUSER)
    os.write(ask, b"?")
    reply = os.read(answer, 8)
    os.close(ask)
    os.close(answer)
    code = int(reply) if reply.isdigit() else errno.ESRCH
    if code:
        raise OSError(code, "map the build's fixed ids onto its identity: "
                      + (os.strerror(code) if reply else "the supervisor did not answer"))
