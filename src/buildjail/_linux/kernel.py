"""Thin ctypes bindings to the kernel interfaces the native backend uses."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct

from .procfs import read_setting

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS, "cgroup": CLONE_NEWCGROUP, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER, "pid": CLONE_NEWPID, "net": CLONE_NEWNET,
}

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21

_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, -1)
MNT_DETACH = 2
_CAPABILITY_VERSION_3 = 0x20080522
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
# Every function is looked up here, at import: forked sandbox processes then need no dlsym.
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                   ctypes.c_char_p]
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_unshare = _libc.unshare
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_capset = _libc.capset
_capget = _libc.capget


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``unshare(2)``)."""
    names = ", ".join(name for name, flag in NAMESPACE_FLAGS.items() if flags & flag)
    _check(_unshare(ctypes.c_int(flags)), f"unshare {names} namespaces")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """Mount a filesystem (``mount(2)``)."""
    _check(_mount(_encode(source), _encode(target), _encode(fstype), flags, _encode(data)),
           f"mount {fstype or source} on {target}")


READONLY_ATTRIBUTES = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
"""Mount attributes of everything the sandbox shows read-only."""


def make_mounts_private() -> None:
    """Stop mount events propagating between this mount namespace and the host's."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_proc(target: str = "/proc") -> None:
    """Mount a fresh ``/proc`` of the current pid namespace at *target*."""
    mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def open_tree_clone(path: str, recursive: bool = True) -> int:
    """Return a file descriptor holding a detached copy of the mount tree at *path*."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(_syscall(_SYS_OPEN_TREE, AT_FDCWD, _encode(path), ctypes.c_uint(flags)),
                  f"open_tree {path}")


def move_mount(tree_fd: int, target: str) -> None:
    """Attach a detached mount tree at *target* (``move_mount(2)``)."""
    _check(_syscall(_SYS_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, _encode(target),
                         ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")


def pivot_root_here() -> None:
    """Make the current directory the root, and detach the old root (``pivot_root(".", ".")``).

    The old root ends up mounted on top of the new one; detaching it leaves only the new.
    """
    _check(_syscall(_SYS_PIVOT_ROOT, b".", b"."), "pivot_root into the sandbox's root")
    _check(_umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")


def set_mount_attributes(path: str | int, attributes: int, recursive: bool = True) -> None:
    """Set mount attributes (read-only, nosuid...) on the mount at *path* or on a tree fd."""
    attr = _MountAttr(attr_set=attributes)
    flags = AT_RECURSIVE if recursive else 0
    name: bytes | None
    if isinstance(path, int):
        dirfd, name, flags = path, b"", flags | AT_EMPTY_PATH
    else:
        dirfd, name = AT_FDCWD, _encode(path)
    _check(_syscall(_SYS_MOUNT_SETATTR, dirfd, name, ctypes.c_uint(flags),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr {path}")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """Call ``prctl(2)``."""
    return _check(_prctl(option, arg2, arg3, 0, 0), f"prctl {option}")


def set_no_new_privs() -> None:
    """Forbid gaining privileges through execve (setuid binaries, file capabilities)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def drop_bounding_and_ambient() -> None:
    """Empty the bounding and ambient capability sets, so no execve can regain one.

    Without CAP_SETPCAP (a non-root caller outside any user namespace of its own) the
    bounding set cannot be changed; it only bounds what an execve could gain, which
    no_new_privs already forbids, and the ambient set is still cleared.
    """
    if not has_capability(CAP_SETPCAP):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        return
    for capability in range(_LAST_CAPABILITY + 1):
        try:
            prctl(PR_CAPBSET_DROP, capability)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def effective_capabilities() -> int:
    """The calling thread's effective capability set, as a bit mask (``capget(2)``)."""
    header = _CapHeader(version=_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(_capget(ctypes.byref(header), data), "capget")
    return int(data[0].effective) | int(data[1].effective) << 32


def raise_permitted_capabilities() -> None:
    """Make every permitted capability effective again (an euid change cleared them)."""
    header = _CapHeader(version=_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(_capget(ctypes.byref(header), data), "capget")
    for half in data:
        half.effective = half.permitted
    _check(_capset(ctypes.byref(header), data), "capset")


def has_capability(capability: int) -> bool:
    """Whether the calling thread has *capability* in its effective set."""
    return bool(effective_capabilities() >> capability & 1)


def clear_capability_sets() -> None:
    """Empty the effective, permitted and inheritable capability sets."""
    header = _CapHeader(version=_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(_capset(ctypes.byref(header), data), "capset")


_LAST_CAPABILITY = int(read_setting("/proc/sys/kernel/cap_last_cap") or 63)


def loopback_up() -> None:
    """Bring the loopback interface of the current network namespace up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def map_current_ids(uid: int, gid: int, inside_uid: int, inside_gid: int) -> None:
    """Map the caller's uid and gid into the user namespace just created."""
    _write("/proc/self/uid_map", f"{inside_uid} {uid} 1\n")
    _write("/proc/self/setgroups", "deny\n")
    _write("/proc/self/gid_map", f"{inside_gid} {gid} 1\n")


def write_id_maps(pid: int, uid_lines: str, gid_lines: str, *,
                  deny_setgroups: bool = False) -> None:
    """Write the uid and gid maps of *pid*'s new user namespace, from its parent namespace.

    Maps of more than the writer's own id need CAP_SETUID/CAP_SETGID in the parent
    namespace, which a process inside the new namespace no longer has there.
    *deny_setgroups*: nothing in the namespace may ever change its supplementary groups.
    """
    _write(f"/proc/{pid}/uid_map", uid_lines)
    if deny_setgroups:
        _write(f"/proc/{pid}/setgroups", "deny\n")
    _write(f"/proc/{pid}/gid_map", gid_lines)


def scrub_process_memory(title: bytes) -> None:
    """Overwrite this process's argv and environment strings, as shown in ``/proc``."""
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
    finally:
        os.close(fd)
    arg_start, arg_end, env_start, env_end = (int(value) for value in fields[45:49])
    if env_end > env_start:
        ctypes.memset(env_start, 0, env_end - env_start)
    if arg_end > arg_start:
        ctypes.memset(arg_start, 0, arg_end - arg_start)
        ctypes.memmove(arg_start, title, min(len(title), arg_end - arg_start - 1))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _encode(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def close_fds_except(keep: tuple[int, ...]) -> None:
    """Close every file descriptor above 2 but those in *keep*."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)
