"""The disk limit: bytes and inodes a build adds to its writable trees, watched from outside.

The supervisor looks at the file systems holding the writable trees on every tick, which
costs one ``statvfs`` each. Only when one has grown by the rest of the build's budget — by
anyone's writes — does it count what the build itself added: every entry of the trees
changed since the run started (a ``ctime`` the build cannot set back), and the files its
processes hold open after deleting them. That count decides; growth that was someone
else's only moves the next look further out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import time
from collections.abc import Iterable, Iterator

_CLOCK_REALTIME_COARSE = 5
DEFAULT_SHARE = 0.75
"""Without an explicit limit, a build may add ¾ of the free space (and inodes) it starts with."""


@dataclasses.dataclass(frozen=True)
class Usage:
    """Bytes and inodes."""

    bytes: int
    inodes: int


class DiskWatch:
    """Watches the writable trees of one run against a byte and an inode budget."""

    def __init__(self, trees: Iterable[str], max_bytes: int | None,
                 max_inodes: int | None) -> None:
        """Start counting now; None budgets default to ¾ of what is free."""
        self.trees = tuple(trees)
        self.filesystems = _one_path_per_device(self.trees)
        # The clock the kernel stamps ctime with: nothing changed from now on is older.
        self.start_ns = time.clock_gettime_ns(_CLOCK_REALTIME_COARSE)
        self.baseline = {path: _used(path) for path in self.filesystems.values()}
        free = [_free(path) for path in self.filesystems.values()]
        self.limit = Usage(
            max_bytes if max_bytes is not None else _share(f.bytes for f in free),
            max_inodes if max_inodes is not None else _share(f.inodes for f in free))
        self._next_look = self.limit

    def over(self, init_pid: int) -> bool:
        """Whether the build has added more than its budget; cheap unless the disk grew."""
        grown = self._grown()
        if grown.bytes < self._next_look.bytes and grown.inodes < self._next_look.inodes:
            return False
        added = self.added(init_pid)
        if added.bytes > self.limit.bytes or added.inodes > self.limit.inodes:
            return True
        self._next_look = Usage(grown.bytes + self.limit.bytes - added.bytes,
                                grown.inodes + self.limit.inodes - added.inodes)
        return False

    def added(self, init_pid: int) -> Usage:
        """What the build added: entries changed since the start, and its deleted open files."""
        seen: set[tuple[int, int]] = set()
        total_bytes = total_inodes = 0
        devices = set(self.filesystems)
        for info in (*_changed_entries(self.trees, self.start_ns),
                     *_deleted_open_files(init_pid, devices)):
            key = (info.st_dev, info.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total_bytes += info.st_blocks * 512
            total_inodes += 1
        return Usage(total_bytes, total_inodes)

    def _grown(self) -> Usage:
        total_bytes = total_inodes = 0
        for path, before in self.baseline.items():
            now = _used(path)
            total_bytes += max(0, now.bytes - before.bytes)
            total_inodes += max(0, now.inodes - before.inodes)
        return Usage(total_bytes, total_inodes)


def _share(values: Iterable[int]) -> int:
    found = list(values)
    return int(min(found) * DEFAULT_SHARE) if found else 0


def _one_path_per_device(trees: tuple[str, ...]) -> dict[int, str]:
    found: dict[int, str] = {}
    for tree in trees:
        with contextlib.suppress(OSError):
            found.setdefault(os.lstat(tree).st_dev, tree)
    return found


def _used(path: str) -> Usage:
    try:
        info = os.statvfs(path)
    except OSError:
        return Usage(0, 0)
    return Usage((info.f_blocks - info.f_bfree) * info.f_frsize, info.f_files - info.f_ffree)


def _free(path: str) -> Usage:
    try:
        info = os.statvfs(path)
    except OSError:
        return Usage(0, 0)
    return Usage(info.f_bavail * info.f_frsize, info.f_favail)


def _changed_entries(trees: tuple[str, ...], since_ns: int) -> Iterator[os.stat_result]:
    """Entries of *trees* (not following links, not crossing devices) changed since then."""
    for tree in trees:
        try:
            root = os.lstat(tree)
        except OSError:
            continue
        if root.st_ctime_ns >= since_ns:
            yield root
        if not stat.S_ISDIR(root.st_mode):
            continue
        with contextlib.suppress(OSError):
            for _top, dirs, files, dirfd in os.fwalk(tree, follow_symlinks=False):
                same_device = []
                for name in (*dirs, *files):
                    try:
                        info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    except OSError:
                        continue
                    if info.st_dev != root.st_dev:
                        continue  # another file system mounted inside: not this tree's
                    if stat.S_ISDIR(info.st_mode):
                        same_device.append(name)
                    if info.st_ctime_ns >= since_ns:
                        yield info
                dirs[:] = same_device


def _deleted_open_files(init_pid: int, devices: set[int]) -> Iterator[os.stat_result]:
    """Files on *devices* that the sandbox's processes hold open with no name left."""
    for pid in _descendants(init_pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                info = os.stat(f"/proc/{pid}/fd/{fd}")
                if info.st_dev in devices and info.st_nlink == 0 and stat.S_ISREG(info.st_mode):
                    yield info


def _descendants(pid: int) -> Iterator[int]:
    """*pid* and every process below it, from the kernel's children lists."""
    pending = [pid]
    while pending:
        current = pending.pop()
        yield current
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError), open(
                    f"/proc/{current}/task/{task}/children") as stream:
                pending.extend(int(child) for child in stream.read().split())
