"""Change times: what the kernel stamps an inode with when it changes, and how a walk tells
a change made since a moment by them (the hand-back, the normalisation, the disk count)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable

CLOCK_REALTIME_COARSE = 5
"""The clock change times come from (``<linux/time.h>``; the time module does not name it)."""
WHOLE_SECOND_SLACK_NS = 2_000_000_000
"""How far before a moment a whole-second change time may lie and still be a later change's:
file systems that keep whole seconds (ext3, ext4 with 128-byte inodes) stamp a change with
the start of its second, FAT with the even second before."""


def now_ns() -> int:
    """The clock change times are stamped from, now."""
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


def clock_offset_ns() -> int:
    """How far the real-time clock is from the boot-time clock, which is never set: the
    distance shrinks by as much as the real-time clock is set back (NTP, an admin)."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(
        time.CLOCK_BOOTTIME)


def set_back_since(offset_ns: int) -> int:
    """How far the real-time clock has been set back since :func:`clock_offset_ns` gave
    *offset_ns* (0 if not): a time taken then must move back as far, or a change stamped
    after the step would look older than it."""
    return max(offset_ns - clock_offset_ns(), 0)


def horizon(roots: Iterable[str], slack_ns: int) -> int:
    """A moment (ns) before which nothing changed under *roots* from now on is stamped: the
    earlier of this clock's time and each of their file systems' own, less *slack_ns*.

    A file system may stamp change times with another machine's clock (NFS, SMB, FUSE:
    their server's), which may run behind this one: its time is read off a file made there
    and never linked (``O_TMPFILE``), or else made and removed at once. Where neither can
    be made, the horizon is 0: everything there counts as changed.
    """
    times = [now_ns()]
    devices: set[int] = set()
    for root in roots:
        try:
            info = os.lstat(root)
        except OSError:
            continue
        if info.st_dev in devices:
            continue
        devices.add(info.st_dev)
        probed = _filesystem_now(root) if stat.S_ISDIR(info.st_mode) else None
        times.append(0 if probed is None else probed)
    return max(min(times) - slack_ns, 0)


def _filesystem_now(directory: str) -> int | None:
    """The change time the file system of *directory* stamps a file made there now."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError:
        return _named_file_now(directory)
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)


def _named_file_now(directory: str) -> int | None:
    """As :func:`_filesystem_now`, by a file made under a fresh name and removed at once."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    name = f".buildjail-clock-{os.urandom(8).hex()}"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
    except OSError:
        os.close(dir_fd)
        return None
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
        try:
            os.unlink(name, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)


def changed_after(ctime_ns: int, since_ns: int) -> bool:
    """Whether *ctime_ns*, an entry's change time, may be that of a change made after
    *since_ns* (a time of :func:`now_ns`).

    A change time of whole seconds may have been truncated: it counts if it lies within
    WHOLE_SECOND_SLACK_NS before (one a finer file system stamps is whole by a chance in a
    billion, and then merely counts as changed).
    """
    if ctime_ns % 1_000_000_000 == 0:
        return ctime_ns >= since_ns - WHOLE_SECOND_SLACK_NS
    return ctime_ns >= since_ns
