"""Small readers of the kernel's settings and this process's state in /proc."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def read_setting(path: str) -> str | None:
    """Return a small file's stripped text (a sysctl, a /proc entry), or None if unreadable."""
    try:
        with open(path) as stream:
            return stream.read().strip()
    except OSError:
        return None


def seccomp_mode() -> int:
    """Return this process's seccomp mode (0 none, 1 strict, 2 filter)."""
    for line in (read_setting("/proc/self/status") or "").splitlines():
        if line.startswith("Seccomp:"):
            return int(line.split()[1])
    return 0


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
