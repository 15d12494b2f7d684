"""Ephemeral build identities: a fresh UID/GID per sandbox, from a lock-protected range."""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import struct

from ..errors import SandboxSetupError

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from .._records import NamedTuple

LOCK_DIR = "/run/buildjail"
LOCK_FILE = "ids.lock"
QUARANTINE_FILE = "quarantine"
PREFERRED_BASE = 1_000_000
SLOTS = 4096
MIN_SLOTS = 64
USER_NAME = "buildjail"
BUILD_UID = 1000
BUILD_GID = 1000
"""The ids a build sees for itself where a user namespace maps them onto the leased ones:
the same on every run, so no per-run id reaches what it writes (an sdist's tar headers)."""

_F_WRLCK = 1


class Identity(NamedTuple):
    """The uid and gid a sandboxed command runs as, and the name it sees for them."""

    uid: int
    gid: int
    name: str = USER_NAME
    home: str = "/home/" + USER_NAME
    mapped: bool = False
    """The build sees itself as BUILD_UID/BUILD_GID, which a user namespace maps onto these."""

    @property
    def inside_uid(self) -> int:
        """The uid the build sees for itself."""
        return BUILD_UID if self.mapped else self.uid

    @property
    def inside_gid(self) -> int:
        """The gid the build sees for itself."""
        return BUILD_GID if self.mapped else self.gid

    def mapped_inside(self) -> Identity:
        """This identity, seen from inside as the fixed BUILD_UID/BUILD_GID."""
        return self._replace(mapped=True)


class IdRange(NamedTuple):
    """A block of ids, mapped in this user namespace and unused by the host's accounts."""

    start: int
    size: int


class Lease:
    """A held identity; releasing it (or the holder dying) frees the id for reuse."""

    def __init__(self, identity: Identity, lock_fd: int) -> None:
        self.identity = identity
        self.lock_fd = lock_fd

    def borrow(self) -> Lease:
        """A second hold on the same lock: releasing it keeps the identity leased by this one.

        The lock belongs to the open file description, which a duplicate shares: a run
        borrowing a held identity (one package's steps) keeps it locked until its
        supervisor is done, even when the holder dies first.
        """
        if self.lock_fd < 0:
            raise SandboxSetupError("the identity lease was already released",
                                    "set the sandbox up again")
        return Lease(self.identity, os.dup(self.lock_fd))

    def release(self) -> None:
        """Give the identity back."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def mapped_intervals(map_path: str) -> list[tuple[int, int]]:
    """Return the ``[start, end)`` intervals of ids mapped into this user namespace."""
    intervals = []
    with open(map_path) as stream:
        for line in stream:
            inside, _outside, count = (int(part) for part in line.split())
            intervals.append((inside, inside + count))
    return intervals


def choose_range(
    uid_map: list[tuple[int, int]], gid_map: list[tuple[int, int]], taken: set[int]
) -> IdRange:
    """Pick the ephemeral range: the preferred block if mapped, else the top of the largest.

    Above every account and, where the block allows it, above 1000 (the ids a distribution
    gives its users); a small map (e.g. podman's ``--userns=auto``, 1024 ids) also lends the
    ids between the system accounts and 1000.
    """
    usable = _intersect(uid_map, gid_map)
    for start, end in usable:
        if start <= PREFERRED_BASE and end >= PREFERRED_BASE + SLOTS:
            return IdRange(PREFERRED_BASE, SLOTS)
    best = max(usable, key=lambda interval: interval[1] - interval[0], default=(0, 0))
    end = min(best[1], 65534)
    above_accounts = max(best[0], 1, *(id_ + 1 for id_ in taken if id_ < end))
    for floor in (max(above_accounts, 1000), above_accounts):
        start = max(floor, end - SLOTS)
        if end - start >= MIN_SLOTS:
            return IdRange(start, end - start)
    raise SandboxSetupError(
        f"this user namespace maps too few ids for ephemeral build users "
        f"(need {MIN_SLOTS} above every account, mapped: {uid_map})",
        "map more subordinate ids (e.g. a 65536-id range in /etc/subuid and /etc/subgid) "
        "or disable ephemeral_identity in the policy",
    )


def host_range() -> IdRange:
    """Return the ephemeral id range of this host."""
    return _host_range(_stamp("/etc/passwd"), _stamp("/etc/group"))


def _stamp(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@functools.cache
def _host_range(*_stamps: int) -> IdRange:
    taken = _account_ids("/etc/passwd") | _account_ids("/etc/group")
    return choose_range(
        mapped_intervals("/proc/self/uid_map"), mapped_intervals("/proc/self/gid_map"), taken
    )


def acquire(id_range: IdRange | None = None) -> Lease:
    """Lease a free ephemeral identity; the lease is held through an OFD lock."""
    id_range = id_range or host_range()
    fd = _open_lock_file()
    # a random start, from os.urandom: the random module costs `buildjail run` 1.5 ms to import
    offset = int.from_bytes(os.urandom(8), "little") % id_range.size
    quarantined = quarantined_ids()
    for step in range(id_range.size):
        slot = (offset + step) % id_range.size
        if id_range.start + slot in quarantined:
            continue
        if _try_lock(fd, slot):  # OFD locks conflict between threads of one process too
            uid = id_range.start + slot
            return Lease(Identity(uid=uid, gid=uid), fd)
    os.close(fd)
    raise SandboxSetupError(
        f"all {id_range.size} ephemeral build identities are in use",
        "wait for running builds to finish, or run fewer at once",
    )


def quarantine(uid: int) -> None:
    """Never lease *uid* again: files it owns may remain on the host (see the README)."""
    with open(os.path.join(LOCK_DIR, QUARANTINE_FILE), "a") as stream:
        stream.write(f"{uid}\n")


def quarantined_ids() -> set[int]:
    """The ids taken out of the range because a hand-back did not complete."""
    try:
        with open(os.path.join(LOCK_DIR, QUARANTINE_FILE)) as stream:
            return {int(line) for line in stream if line.strip().isdigit()}
    except FileNotFoundError:
        return set()


def _try_lock(fd: int, slot: int) -> bool:
    request = struct.pack("hhqqi4x", _F_WRLCK, os.SEEK_SET, slot, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _open_lock_file() -> int:
    try:
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        return os.open(os.path.join(LOCK_DIR, LOCK_FILE),
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise SandboxSetupError(
            f"cannot open the identity lock file in {LOCK_DIR}: {error.strerror}",
            f"make {LOCK_DIR} writable by root",
        ) from None


def account_entries(path: str) -> tuple[tuple[str, ...], ...]:
    """The colon-separated fields of each line of ``/etc/passwd`` or ``/etc/group``.

    Cached until the file changes: the sandbox reads them on every run.
    """
    return _account_entries(path, _stamp(path))


@functools.cache
def _account_entries(path: str, _stamp: int) -> tuple[tuple[str, ...], ...]:
    try:
        with open(path) as stream:
            return tuple(tuple(line.rstrip("\n").split(":")) for line in stream)
    except OSError:
        return ()


def _account_ids(path: str) -> set[int]:
    return {int(parts[2]) for parts in account_entries(path)
            if len(parts) > 2 and parts[2].isdigit()}


def _intersect(
    first: list[tuple[int, int]], second: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    result = []
    for a_start, a_end in first:
        for b_start, b_end in second:
            start, end = max(a_start, b_start), min(a_end, b_end)
            if start < end:
                result.append((start, end))
    return result


def passwd_text(identity: Identity) -> str:
    """Return the synthetic ``/etc/passwd`` shown inside the sandbox."""
    lines = ["root:x:0:0:root:/root:/bin/sh"]
    if identity.inside_uid != 0:
        lines.append(f"{identity.name}:x:{identity.inside_uid}:{identity.inside_gid}:build user:"
                     f"{identity.home}:/bin/sh")
    lines.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    return "\n".join(lines) + "\n"


def group_text(identity: Identity) -> str:
    """Return the synthetic ``/etc/group`` shown inside the sandbox."""
    lines = ["root:x:0:"]
    if identity.inside_gid != 0:
        lines.append(f"{identity.name}:x:{identity.inside_gid}:")
    lines.append("nogroup:x:65534:")
    return "\n".join(lines) + "\n"
