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

import errno
import os

from . import kernel as k


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
