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
import os
import stat
from collections.abc import Iterable, Iterator

from .changetimes import changed_after, now_ns
from .procfs import descendants

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from .._records import NamedTuple

DEFAULT_SHARE = 0.75
"""Without an explicit limit, a build may add ¾ of the free space (and inodes) it starts with."""


class Usage(NamedTuple):
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
        self.start_ns = now_ns()
        self.baseline = {path: _used(path) for path in self.filesystems.values()}
        free = [_free(path) for path in self.filesystems.values()]
        self.limit = Usage(
            max_bytes if max_bytes is not None else _share(f.bytes for f in free),
            max_inodes if max_inodes is not None else _share(f.inodes for f in free))
        self.floor = {path: Usage(int(f.bytes * (1 - DEFAULT_SHARE)),
                                  int(f.inodes * (1 - DEFAULT_SHARE)))
                      for path, f in zip(self.filesystems.values(), free, strict=True)}
        """Free space (and inodes) below which the host would fill: the run stops there,
        whatever the count says (files held by descriptors in flight are out of its sight)."""
        self._next_look = self.limit

    def over(self, init_pid: int) -> bool:
        """Whether the build has added more than its budget; cheap unless the disk grew."""
        if self._host_filling():
            return True
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
        """What the build added: entries changed since the start, and the deleted files its
        processes keep open or mapped."""
        sizes: dict[tuple[int, int], int] = {}
        devices = set(self.filesystems)
        for info in _changed_entries(self.trees, self.start_ns):
            sizes.setdefault((info.st_dev, info.st_ino), info.st_blocks * 512)
        for key, size in _held_deleted_files(init_pid, devices):
            sizes[key] = max(size, sizes.get(key, 0))
        return Usage(sum(sizes.values()), len(sizes))

    def _host_filling(self) -> bool:
        for path, floor in self.floor.items():
            free = _free(path)
            if free.bytes < floor.bytes or free.inodes < floor.inodes:
                return True
        return False

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
    """Entries of *trees* changed since then: iteratively (a build can nest directories
    thousands deep), by descriptor (any path length), not following links nor crossing
    into other file systems mounted inside."""
    for tree in trees:
        try:
            root = os.lstat(tree)
        except OSError:
            continue
        if changed_after(root.st_ctime_ns, since_ns):
            yield root
        if stat.S_ISDIR(root.st_mode):
            yield from _changed_below(tree, root.st_dev, since_ns)


def _changed_below(tree: str, device: int, since_ns: int) -> Iterator[os.stat_result]:
    """Depth first, one open directory per level. What cannot be examined (a tree deeper than
    this process may open descriptors, say) raises: the watch then stops the build."""
    stack: list[tuple[int, Iterator[str]]] = []
    try:
        fd = _open_directory(tree)
        stack.append((fd, iter(_names(fd))))
        while stack:
            fd, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(stack.pop()[0])
                continue
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone meanwhile
            if info.st_dev != device:
                continue  # another file system mounted inside: not this tree's
            if changed_after(info.st_ctime_ns, since_ns):
                yield info
            if stat.S_ISDIR(info.st_mode):
                child = _open_directory(name, fd)
                stack.append((child, iter(_names(child))))
    finally:
        for fd, _ in stack:
            os.close(fd)


def _open_directory(name: str, dir_fd: int | None = None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=dir_fd)


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as entries:
        return [entry.name for entry in entries]


def _held_deleted_files(init_pid: int, devices: set[int]) -> Iterator[tuple[tuple[int, int],
                                                                          int]]:
    """(device, inode) and size of files on *devices* that the sandbox's processes hold with
    no name left: through a descriptor, or mapped (which needs no descriptor)."""
    for pid in descendants(init_pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    info = os.stat(f"/proc/{pid}/fd/{fd}")
                    if info.st_dev in devices and info.st_nlink == 0 and stat.S_ISREG(
                            info.st_mode):
                        yield (info.st_dev, info.st_ino), info.st_blocks * 512
        yield from _mapped_deleted_files(pid, devices)


def _mapped_deleted_files(pid: int, devices: set[int]) -> Iterator[tuple[tuple[int, int], int]]:
    try:
        with open(f"/proc/{pid}/maps") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].endswith("(deleted)"):
            continue
        major, _, minor = fields[3].partition(":")
        try:
            device, inode = os.makedev(int(major, 16), int(minor, 16)), int(fields[4])
        except ValueError:
            continue
        if device not in devices:
            continue
        start, _, end = fields[0].partition("-")
        size = int(end, 16) - int(start, 16)  # at least what is mapped
        with contextlib.suppress(OSError):  # the whole file, where this process may look
            size = max(size, os.stat(f"/proc/{pid}/map_files/{fields[0]}").st_blocks * 512)
        yield (device, inode), size
