"""Small readers of the kernel's settings and this process's state in /proc."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


def read_setting(path: str) -> str | None:
    """Return a small file's stripped text (a sysctl, a /proc entry), or None if unreadable."""
    try:
        with open(path) as stream:
            return stream.read().strip()
    except OSError:
        return None


def status_fields() -> dict[str, str]:
    """This process's ``/proc/self/status``, field by field (values stripped; {} unread)."""
    lines = (read_setting("/proc/self/status") or "").splitlines()
    return {name: value.strip() for name, value in (
        line.split(":", 1) for line in lines if ":" in line)}


def seccomp_mode() -> int:
    """Return this process's seccomp mode (0 none, 1 strict, 2 filter)."""
    return int(status_fields().get("Seccomp") or 0)


INITIAL_USER_NAMESPACE = 0xEFFFFFFD
"""The inode number of the host's own user namespace (``PROC_USER_INIT_INO``): fixed."""
_CAP_SYS_ADMIN = 21


def unconfined_host_root() -> bool:
    """Whether this process is root of the host, unconfined: euid 0 in the initial user
    namespace with CAP_SYS_ADMIN, no seccomp filter, no LSM confinement (none, or AppArmor's
    ``unconfined``) and no namespace count limited to 0. There the kernel refuses none of the
    namespaces, private mounts or /proc mount a sandbox starts with, so whether it does need
    not be tried (``userns.namespaces_refused``, two forks). Anything else, or anything
    unreadable, is False: then it is tried."""
    if os.geteuid() != 0:
        return False
    try:
        if os.stat("/proc/self/ns/user").st_ino != INITIAL_USER_NAMESPACE:
            return False
    except OSError:
        return False
    status = status_fields()
    try:
        if not int(status["CapEff"], 16) >> _CAP_SYS_ADMIN & 1 or int(status["Seccomp"]):
            return False
    except (KeyError, ValueError):
        return False
    if _lsm_label() not in (None, "unconfined"):
        return False
    return all(int(read_setting(f"/proc/sys/user/max_{kind}_namespaces") or 0) > 0
               for kind in ("mnt", "pid", "net", "ipc", "uts", "cgroup"))


def _lsm_label() -> str | None:
    """This process's label of the major LSM (AppArmor's profile, SELinux's context), or None
    when no LSM gives one (the file refuses to be read with EINVAL)."""
    try:
        with open("/proc/self/attr/current") as stream:
            return stream.read().strip().rstrip("\0")
    except OSError as error:
        return None if error.errno == errno.EINVAL else "unreadable"


def children(pid: int) -> list[int]:
    """The pids of *pid*'s children (of each of its threads), from the kernel's lists."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError), open(
                f"/proc/{pid}/task/{task}/children") as stream:
            found += [int(child) for child in stream.read().split()]
    return found


def descendants(pid: int) -> Iterator[int]:
    """*pid* and every process below it, from the kernel's children lists."""
    pending = [pid]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(children(current))


MAX_COMMAND_LINE = 4096
"""Bytes read of a process's command line: the build writes it, so it is bounded."""


def is_running(pid: int) -> bool:
    """Whether *pid* exists and has not exited (a zombie, or dead, has).

    A thread group whose leader alone exited (``SYS_exit``, not ``exit_group``) shows the
    leader as a zombie while its other threads run on: each thread is asked then.
    """
    state = _state(f"/proc/{pid}/stat")
    if state != b"Z":
        return state not in (None, b"X", b"x")
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_state(f"/proc/{pid}/task/{task}/stat") not in (None, b"Z", b"X", b"x")
               for task in tasks if task != str(pid))


def _state(path: str) -> bytes | None:
    """The state letter of a ``stat`` file, None where it cannot be read."""
    try:
        with open(path, "rb") as stream:
            stat = stream.read(1024)
    except OSError:
        return None
    state = stat.rpartition(b")")[2].split(maxsplit=1)[:1]  # the name may hold ") "
    return state[0] if state else None


def command_line(pid: int) -> list[str]:
    """*pid*'s arguments as it shows them, at most MAX_COMMAND_LINE bytes of them (its name,
    bracketed, where it shows none); ``[]`` when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            data = stream.read(MAX_COMMAND_LINE)
        if not data:  # a leader that exited alone has no memory left: a thread still has
            data = _thread_command_line(pid)
        if not data:
            with open(f"/proc/{pid}/comm", "rb") as stream:
                name = stream.read(64).rstrip(b"\n")
            return [f"[{name.decode('utf-8', 'backslashreplace')}]"]
    except OSError:
        return []
    return [arg.decode("utf-8", "backslashreplace") for arg in data.rstrip(b"\0").split(b"\0")]


def _thread_command_line(pid: int) -> bytes:
    """The command line as *pid*'s first thread that shows one shows it (b"" if none)."""
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(
                    f"/proc/{pid}/task/{task}/cmdline", "rb") as stream:
                data = stream.read(MAX_COMMAND_LINE)
                if data:
                    return data
    return b""
