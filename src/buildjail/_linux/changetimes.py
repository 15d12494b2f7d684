"""Change times: what the kernel stamps an inode with when it changes, and how a walk tells
a change made since a moment by them (the hand-back, the normalisation, the disk count)."""

from __future__ import annotations

import time

CLOCK_REALTIME_COARSE = 5
"""The clock change times come from (``<linux/time.h>``; the time module does not name it)."""
WHOLE_SECOND_SLACK_NS = 2_000_000_000
"""How far before a moment a whole-second change time may lie and still be a later change's:
file systems that keep whole seconds (ext3, ext4 with 128-byte inodes) stamp a change with
the start of its second, FAT with the even second before."""


def now_ns() -> int:
    """The clock change times are stamped from, now."""
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


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
