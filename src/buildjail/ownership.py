"""Lend writable trees to an ephemeral identity and hand them back to the caller afterwards.

Both walks run as root, outside the sandbox, after every process of the sandbox is dead.
They never follow symlinks, never recurse (a build can nest directories thousands deep),
and never give away a file that has other hard links: its other names could lie outside
the writable tree, and owning it would let the build write there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

Owners = dict[tuple[int, int], tuple[int, int]]


class HandBackIncomplete(OSError):  # noqa: N818 - an OSError, named for what happened
    """Some entries could not be handed back; they may still belong to the ephemeral uid."""


def lend(paths: Iterable[str], uid: int, gid: int) -> Owners:
    """Give every entry under *paths* to ``uid:gid``; return the original owners."""
    owners: Owners = {}
    for entry, info in _walk(paths, errors=[]):
        key = (info.st_dev, info.st_ino)
        if key in owners:
            continue  # seen through an outer writable path already
        owners[key] = (info.st_uid, info.st_gid)
        shared = not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1
        if not shared and (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(entry, uid, gid)
    return owners


def hand_back(paths: Iterable[str], owners: Owners, borrower: int, uid: int, gid: int) -> None:
    """Restore the original owners and give what *borrower* created to ``uid:gid``.

    Strips setuid and setgid bits from regular files. Raises HandBackIncomplete, after
    trying every entry, when some could not be changed.
    """
    errors: list[str] = []
    for entry, info in _walk(paths, errors):
        original = owners.get((info.st_dev, info.st_ino))
        if original is None and borrower not in (info.st_uid, info.st_gid):
            continue
        target = original or (uid, gid)
        try:
            if (info.st_uid, info.st_gid) != target:
                os.lchown(entry, *target)
            if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(entry, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
        except OSError as error:
            errors.append(f"{entry}: {error.strerror}")
    if errors:
        raise HandBackIncomplete(0, f"{len(errors)} entries not handed back, e.g. {errors[0]}")


def _walk(paths: Iterable[str], errors: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under *paths* (roots included), depth-first, without recursion."""
    pending: list[tuple[str, int | None]] = [(path, None) for path in reversed(list(paths))]
    while pending:
        path, device = pending.pop()
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            errors.append(f"{path}: {error.strerror}")
            continue
        yield path, info
        if stat.S_ISDIR(info.st_mode) and device in (None, info.st_dev):
            try:
                names = os.listdir(path)
            except OSError as error:
                errors.append(f"{path}: {error.strerror}")
                continue
            pending.extend((os.path.join(path, name), info.st_dev) for name in names)
