"""Lend writable trees to an ephemeral identity and hand them back to the caller afterwards."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

Owners = dict[tuple[int, int], tuple[int, int]]


def lend(paths: Iterable[str], uid: int, gid: int) -> Owners:
    """Give every entry under *paths* to ``uid:gid``; return the original owners."""
    owners: Owners = {}
    for entry, info in _walk(paths):
        owners[(info.st_dev, info.st_ino)] = (info.st_uid, info.st_gid)
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(entry, uid, gid)
    return owners


def hand_back(paths: Iterable[str], owners: Owners, borrower: int, uid: int, gid: int) -> int:
    """Restore the original owners and give what *borrower* created to ``uid:gid``."""
    changed = 0
    for entry, info in _walk(paths):
        original = owners.get((info.st_dev, info.st_ino))
        if original is None and borrower not in (info.st_uid, info.st_gid):
            continue
        target = original or (uid, gid)
        if (info.st_uid, info.st_gid) != target:
            os.lchown(entry, *target)
            changed += 1
        if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(entry, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
    return changed


def _walk(paths: Iterable[str]) -> Iterator[tuple[str, os.stat_result]]:
    for root in paths:
        try:
            info = os.lstat(root)
        except FileNotFoundError:
            continue
        yield root, info
        if stat.S_ISDIR(info.st_mode):
            yield from _walk_directory(root, info.st_dev)


def _walk_directory(directory: str, device: int) -> Iterator[tuple[str, os.stat_result]]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        yield entry.path, info
        if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
            yield from _walk_directory(entry.path, device)
