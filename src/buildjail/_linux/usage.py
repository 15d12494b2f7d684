"""What a sandbox's processes hold, counted from inside its namespaces.

Used by the in-sandbox monitor where no cgroup counts for the kernel: memory of every kind
a build can hold without a process mapping it — System V shared memory and message queues
of the sandbox's IPC namespace, socket buffers of its network namespace — besides each
process's resident memory, and the CPU time of all its processes together. memfds, the
one other kind, are refused by the seccomp filter; tmpfs contents are counted by statvfs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Sequence

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_UDIAG_SHOW_MEMINFO = 0x20
_UNIX_DIAG_MEMINFO = 5
_UDIAG_SHOW_UID = 0x40
_UNIX_DIAG_UID = 7
_SK_MEMINFO_RMEM_ALLOC = 0
_SK_MEMINFO_WMEM_ALLOC = 2
SK_MEMINFO_DROPS = 8
"""Index in :func:`socket_meminfo` of the datagrams the kernel dropped (a full queue)."""
_SO_MEMINFO = 55
_SK_MEMINFO = struct.Struct("9I")
_NLMSG_HEADER = struct.Struct("=IHHII")
_UNIX_DIAG_REQUEST = struct.Struct("=BBHIII2I")
_UNIX_DIAG_MESSAGE_SIZE = 16
_RTATTR = struct.Struct("=HH")
_INODE = struct.Struct("=I")
_INET_TABLES = ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6",
                "/proc/net/udplite", "/proc/net/udplite6")
"""UDP-Lite sockets are in tables of their own (sockstat's UDPLITE lines count them)."""
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


_PROCESS_FIELDS = ("RssAnon:", "RssShmem:", "VmPTE:", "VmSwap:")
"""Resident anonymous and shared memory, the page tables that map memory, and what of it
was swapped out: a process can make the page tables alone take a gigabyte."""


def process_memory(pid: str) -> int:
    """The memory a process holds: resident, swapped out, and its page tables."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith(_PROCESS_FIELDS):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return total


def held_sockets(pids: list[int]) -> frozenset[int]:
    """The inodes of the sockets these processes hold descriptors of."""
    found: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError, ValueError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        found.add(int(target[8:-1]))
    return frozenset(found)


def ipc_memory() -> int:
    """Bytes in System V shared memory segments (attached or not) and message queues."""
    return (_column_sum("/proc/sysvipc/shm", ("rss", "swap"))
            + _column_sum("/proc/sysvipc/msg", ("cbytes",)))


def _column_sum(path: str, columns: tuple[str, ...]) -> int:
    try:
        with open(path) as stream:
            header = stream.readline().split()
            indexes = [header.index(name) for name in columns if name in header]
            return sum(int(fields[index]) for fields in map(str.split, stream)
                       for index in indexes if index < len(fields))
    except (OSError, ValueError):
        return 0


def socket_memory(own: Sequence[socket.socket] = ()) -> int:
    """Bytes queued in this network namespace's sockets: unix (sock_diag), inet, netlink;
    *own*: its inet sockets that are the sandbox's own (the DNS trap)."""
    return unix_socket_memory() + inet_socket_memory(own) + netlink_socket_memory()


def netlink_socket_memory() -> int:
    """Bytes in netlink sockets' receive and send queues (/proc/net/netlink Rmem, Wmem)."""
    total = 0
    with contextlib.suppress(OSError), open("/proc/net/netlink") as stream:
        header = next(stream, "").split()
        columns = [header.index(name) for name in ("Rmem", "Wmem") if name in header]
        for line in stream:
            fields = line.split()
            with contextlib.suppress(ValueError, IndexError):
                total += sum(int(fields[index]) for index in columns)
    return total


def inet_socket_memory(own: Sequence[socket.socket] = ()) -> int:
    """Bytes in the send and receive queues of TCP, UDP and UDP-Lite sockets (/proc/net
    tables).

    Those tables are walked over every namespace's sockets, the host's too (milliseconds on
    a busy host): read only when this namespace's counters say it has inet sockets besides
    *own*, whose queues are then asked of each socket (SO_MEMINFO).
    """
    if _inet_sockets_in_use() <= len(own):
        return sum(map(_queued, own))
    total = 0
    for table in _INET_TABLES:
        with contextlib.suppress(OSError), open(table) as stream:
            next(stream, None)
            for line in stream:
                fields = line.split()
                if len(fields) > 4 and ":" in fields[4]:
                    tx, _, rx = fields[4].partition(":")
                    with contextlib.suppress(ValueError):
                        total += int(tx, 16) + int(rx, 16)
    return total


def _inet_sockets_in_use() -> int:
    """This namespace's TCP and UDP sockets, orphaned and closing ones too (sockstat);
    one more than any could be where a counter cannot be read."""
    total = 0
    for path in ("/proc/net/sockstat", "/proc/net/sockstat6"):
        try:
            with open(path) as stream:
                for line in stream:
                    protocol, _, counts = line.partition(":")
                    if protocol in ("TCP", "UDP", "TCP6", "UDP6", "UDPLITE", "UDPLITE6"):
                        words = counts.split()
                        pairs = dict(zip(words[::2], words[1::2], strict=False))
                        total += sum(int(pairs.get(key, "0"))
                                     for key in ("inuse", "orphan", "tw"))
        except (OSError, ValueError):
            return 1 << 30  # unknown: walk the tables
    return total


def socket_meminfo(sock: socket.socket) -> tuple[int, ...] | None:
    """*sock*'s SO_MEMINFO counters (queued bytes, buffer sizes, drops); None where the
    kernel does not say."""
    try:
        return tuple(_SK_MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO,
                                                        _SK_MEMINFO.size)))
    except OSError:
        return None


def _queued(sock: socket.socket) -> int:
    """Bytes in *sock*'s receive and send queues (SO_MEMINFO)."""
    info = socket_meminfo(sock)
    return 0 if info is None else info[_SK_MEMINFO_RMEM_ALLOC] + info[_SK_MEMINFO_WMEM_ALLOC]


def unix_socket_memory(inodes: frozenset[int] | None = None, uid: int | None = None) -> int:
    """Bytes held by unix sockets of this network namespace (their rmem and wmem); only
    by the sockets whose inode is in *inodes*, or which *uid* made, when given."""
    show = _UDIAG_SHOW_MEMINFO | (_UDIAG_SHOW_UID if uid is not None else 0)
    request = _UNIX_DIAG_REQUEST.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
                                      show, 0xFFFFFFFF, 0xFFFFFFFF)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
            link.settimeout(1.0)
            link.send(header + request)
            return _sum_unix_replies(link, inodes, uid)
    except OSError:
        return 0


def _sum_unix_replies(link: socket.socket, inodes: frozenset[int] | None = None,
                      uid: int | None = None) -> int:
    total = 0
    while True:
        data = link.recv(1 << 16)
        offset = 0
        while offset + _NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
            if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < _NLMSG_HEADER.size:
                return total
            body = data[offset + _NLMSG_HEADER.size:offset + length]
            attributes = body[_UNIX_DIAG_MESSAGE_SIZE:]
            if (inodes is None or (len(body) >= 8 and _INODE.unpack_from(body, 4)[0] in inodes)
                    ) and (uid is None or _attribute_u32(attributes, _UNIX_DIAG_UID) == uid):
                total += _unix_meminfo(attributes)
            offset += (length + 3) & ~3
        if not data:
            return total


def _attribute_u32(attributes: bytes, wanted: int) -> int | None:
    """The 32-bit value of the netlink attribute *wanted* among *attributes*, if there."""
    offset = 0
    while offset + _RTATTR.size <= len(attributes):
        length, kind = _RTATTR.unpack_from(attributes, offset)
        if length < _RTATTR.size:
            return None
        if kind == wanted and length >= _RTATTR.size + 4:
            return int(_INODE.unpack_from(attributes, offset + _RTATTR.size)[0])
        offset += (length + 3) & ~3
    return None


def _unix_meminfo(attributes: bytes) -> int:
    offset = 0
    while offset + _RTATTR.size <= len(attributes):
        length, kind = _RTATTR.unpack_from(attributes, offset)
        if length < _RTATTR.size:
            return 0
        if kind == _UNIX_DIAG_MEMINFO and length >= _RTATTR.size + 12:
            values = struct.unpack_from("=3I", attributes, offset + _RTATTR.size)
            return int(values[_SK_MEMINFO_RMEM_ALLOC]) + int(values[_SK_MEMINFO_WMEM_ALLOC])
        offset += (length + 3) & ~3
    return 0


def cpu_seconds(pids: list[str], reaper: str = "1") -> float:
    """CPU time of these live processes and of every process that ended among them.

    A process's ``cutime``/``cstime`` hold the time of the children it waited for, so the
    live processes' own and children's times, plus what the *reaper* (pid 1, which
    adopts orphans) waited for, cover each process once.
    """
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if len(fields) > 16:
            ticks += sum(int(value) for value in fields[13:17])
    reaped = _stat_fields(reaper)
    if len(reaped) > 16:
        ticks += int(reaped[15]) + int(reaped[16])
    return ticks / _CLOCK_TICKS


def _stat_fields(pid: str) -> list[str]:
    """The fields of /proc/PID/stat, numbered from 1 as in proc(5) at index - 1."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            text = stream.read().decode(errors="replace")
    except OSError:
        return []
    head, _, tail = text.rpartition(")")
    return [head.split(" ", 1)[0], head, *tail.split()]


TMPFS_INODE_SIZE = 1024
"""What tmpfs counts per inode (BOGO_INODE_SIZE); xattrs take from the same inode space."""


def tmpfs_used(path: str) -> int:
    """Bytes used on the tmpfs at *path*: its blocks, and its inodes and their xattrs,
    which take no blocks (300,000 empty files, or xattrs, would otherwise be free)."""
    try:
        info = os.statvfs(path)
    except OSError:
        return 0
    blocks = (info.f_blocks - info.f_bfree) * info.f_frsize
    return blocks + (info.f_files - info.f_ffree) * TMPFS_INODE_SIZE
