"""The listener of seccomp's recording filter: what a stopped call asked for, then go on.

The kernel stops each call :func:`.seccomp.build_recording_filter` names until the
listener has answered it (``SECCOMP_RET_USER_NOTIF``). The answer here is always
``SECCOMP_USER_NOTIF_FLAG_CONTINUE``: the call then runs as it would have without the
filter, with the same result and the same error (the sandbox's namespaces and its deny
filter still decide what it may do). So nothing here enforces anything, and the kernel's
warning about ``CONTINUE`` (the call's memory may change between the listener's read and
the call's own) is about enforcement: what is read is the build's word, recorded as such.

Everything read is the build's memory, so every read is bounded: at most ``MAX_ARGS``
arguments of at most ``MAX_STRING`` bytes, one socket address of at most 128 bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence

from . import seccomp

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Final, NamedTuple, TypeVar

    _T = TypeVar("_T")

    class _Stopped(NamedTuple):
        id: int
        pid: int
        call: str
        args: tuple[int, ...]

    class _Headed(NamedTuple):
        address: str
        port: int
else:  # the same tuples, made without typing
    _Stopped = namedtuple("Notification", ("id", "pid", "call", "args"))
    _Headed = namedtuple("Destination", ("address", "port"))

MAX_ARGS: Final = 64
"""Arguments of an ``execve`` read; the rest are counted."""
MAX_STRING: Final = 1024
"""Bytes read of one path or argument."""
MAX_MESSAGES: Final = 64
"""Messages of one ``sendmmsg`` whose addresses are read; the rest are counted."""

# struct seccomp_notif { __u64 id; __u32 pid; __u32 flags; struct seccomp_data data; }
_NOTIF: Final = struct.Struct("<QIIiIQ6Q")
# struct seccomp_notif_resp { __u64 id; __s64 val; __s32 error; __u32 flags; }
_RESPONSE: Final = struct.Struct("<QqiI")
_CONTINUE: Final = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE


def _iowr(number: int, size: int, write_only: bool = False) -> int:
    direction = 1 if write_only else 3  # _IOC_WRITE, or _IOC_READ | _IOC_WRITE
    return (direction << 30) | (size << 16) | (ord("!") << 8) | number


_RECV: Final = _iowr(0, _NOTIF.size)
_SEND: Final = _iowr(1, _RESPONSE.size)
_ID_VALID: Final = _iowr(2, 8, write_only=True)
_POINTER: Final = struct.Struct("<Q")
_SOCKADDR_MAX: Final = 128
_AF_INET: Final = 2
_AF_INET6: Final = 10
_UIO_MAXIOV: Final = 1024  # the most messages one sendmmsg sends


class Notification(_Stopped):
    """One stopped call: the kernel's id for it, the caller's pid (as the listener's pid
    namespace sees it), the call's name and its six arguments."""

    __slots__ = ()


class Destination(_Headed):
    """Where a socket call was headed: an IPv4 or IPv6 address and port."""

    __slots__ = ()

    @property
    def loopback(self) -> bool:
        """Whether the address is the sandbox's own (127/8, ::1, ::ffff:127/104) or the
        unspecified one (0.0.0.0, ::, ::ffff:0.0.0.0); read from its bytes, as
        ``ipaddress`` would tell (not imported: ~1 ms of every run's start-up)."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        packed = socket.inet_pton(family, self.address)
        if packed[:12] == _IPV4_MAPPED:
            packed = packed[12:]
        if len(packed) == 4:
            return packed[0] == 127 or packed == bytes(4)
        return packed in (bytes(15) + b"\1", bytes(16))


_IPV4_MAPPED = bytes(10) + b"\xff\xff"
"""The first 12 bytes of an IPv4-mapped IPv6 address (``::ffff:0:0/96``)."""


def _names() -> Mapping[int, str]:
    numbers = seccomp.recorded_numbers()
    return {numbers[call]: call for call in seccomp.RECORDED_CALLS}


_CALLS: Final = _names()


def receive(listener: int) -> Notification | None:
    """The next stopped call, or None when it was gone before it could be read (the caller
    was killed: ENOENT). Call only when *listener* polls readable: this blocks."""
    buffer = bytearray(_NOTIF.size)  # the kernel wants it zeroed
    try:
        fcntl.ioctl(listener, _RECV, buffer, True)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.EINTR):
            return None
        raise
    ident, pid, _, nr, _, _, *args = _NOTIF.unpack(buffer)
    return Notification(ident, pid, _CALLS.get(nr, str(nr)), tuple(args))


def still_waiting(listener: int, notification: Notification) -> bool:
    """Whether the call is still stopped: what was read was its caller's memory, not that of
    a new process that took its pid."""
    try:
        fcntl.ioctl(listener, _ID_VALID, _POINTER.pack(notification.id))
    except OSError:
        return False
    return True


def let_continue(listener: int, notification: Notification) -> None:
    """Let the call run as it would have without the filter."""
    with contextlib.suppress(OSError):  # ENOENT: its caller is gone
        fcntl.ioctl(listener, _SEND, _RESPONSE.pack(notification.id, 0, 0, _CONTINUE))


@contextlib.contextmanager
def acting_as(owner: tuple[int, int] | None) -> Iterator[None]:
    """Within: this process's effective ids are *owner*'s (uid, gid); its real and saved
    ones are kept, for the way back (None: as it is).

    The kernel lets a process look into the processes of its own (file-system) uid, and
    into a user namespace its effective uid owns (the build's own, where it has one),
    without CAP_SYS_PTRACE, which a container's root often lacks. The real uid stays: a
    process of *owner*'s may not signal this one, which the sandbox's pid namespace hides
    from it anyway. Only for a single-threaded process (the supervisor).
    """
    if owner is None:
        yield
        return
    uid, gid = owner
    before_uid, before_gid = os.geteuid(), os.getegid()
    os.setresgid(-1, gid, -1)
    os.setresuid(-1, uid, -1)
    try:
        yield
    finally:
        os.setresuid(-1, before_uid, -1)  # root's real uid: its capabilities come back
        os.setresgid(-1, before_gid, -1)


def _as_self_else_owner(attempt: Callable[[], _T], owner: tuple[int, int] | None) -> _T:
    """What *attempt* returns, tried with this process's own rights, then, where those are
    refused (PermissionError) and there is an *owner*, once more as *owner*
    (:func:`acting_as`). The refusal is raised again when there is no owner; what the
    second try raises, as it comes."""
    try:
        return attempt()
    except PermissionError:
        if owner is None:
            raise
        with acting_as(owner):
            return attempt()


class Memory:
    """Bounded reads of a stopped process's memory (``/proc/PID/mem``): opened with this
    process's own rights (CAP_SYS_PTRACE reads any), else as *owner* (:func:`acting_as`:
    without the capability, a process of the owner's that is still dumpable)."""

    def __init__(self, pid: int, owner: tuple[int, int] | None = None) -> None:
        path = f"/proc/{pid}/mem"
        self.fd = _as_self_else_owner(lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC), owner)

    def close(self) -> None:
        """Close the memory's descriptor."""
        os.close(self.fd)

    def read(self, address: int, size: int) -> bytes:
        """Up to *size* bytes at *address* (fewer where the mapping ends)."""
        if address == 0:
            return b""
        try:  # the kernel returns what it could read before an unmapped page
            return os.pread(self.fd, size, address)
        except OSError as error:
            if error.errno in (errno.EIO, errno.EFAULT):
                return b""
            raise

    def string(self, address: int) -> str:
        """The NUL-terminated string at *address*, its first MAX_STRING bytes, decoded
        with escapes for what is not UTF-8."""
        return _decoded(self.read(address, MAX_STRING).split(b"\0", 1)[0])

    def pointers(self, address: int, limit: int) -> tuple[list[int], bool]:
        """The pointers of the NULL-ended array at *address*, at most *limit* of them, and
        whether there were more."""
        data = self.read(address, (limit + 1) * _POINTER.size)
        found: list[int] = []
        for (value,) in _POINTER.iter_unpack(data[:len(data) - len(data) % _POINTER.size]):
            if value == 0:
                return found, False
            found.append(value)
        return found[:limit], len(found) > limit


MORE_ARGUMENTS: Final = "...[more arguments]"
"""The last argument of a program's arguments read cut at MAX_ARGS."""


def _decoded(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def program_of(notification: Notification, memory: Memory) -> tuple[str, list[str]]:
    """An ``execve``'s or ``execveat``'s path and arguments (MORE_ARGUMENTS when cut)."""
    args = notification.args
    path_at, argv_at = (args[1], args[2]) if notification.call == "execveat" else args[:2]
    pointers, more = memory.pointers(argv_at, MAX_ARGS)
    argv = [memory.string(pointer) for pointer in pointers]
    if more:
        argv.append(MORE_ARGUMENTS)
    return memory.string(path_at), argv


def as_read(argv: Sequence[str]) -> list[str]:
    """*argv* as :func:`program_of` would read it back: each argument cut at MAX_STRING
    bytes, the list at MAX_ARGS."""
    read = [_decoded(os.fsencode(arg)[:MAX_STRING]) for arg in argv[:MAX_ARGS]]
    return [*read, MORE_ARGUMENTS] if len(argv) > MAX_ARGS else read


def destinations_of(notification: Notification,
                    memory: Memory) -> tuple[list[Destination], int]:
    """The internet addresses a ``connect``, ``sendto``, ``sendmsg`` or ``sendmmsg`` names
    (none for a unix or netlink socket's, or a message without an address), and how many
    messages of a ``sendmmsg`` were past MAX_MESSAGES, unread."""
    args = notification.args
    if notification.call == "connect":
        return _destination(memory, args[1], args[2]), 0
    if notification.call == "sendto":
        return _destination(memory, args[4], args[5]), 0
    if notification.call == "sendmsg":
        return _message_destination(memory, args[1]), 0
    if notification.call == "sendmmsg":
        count = args[2] & 0xFFFFFFFF
        found: list[Destination] = []
        for index in range(min(count, MAX_MESSAGES)):
            found += _message_destination(memory, args[1] + 64 * index)  # struct mmsghdr
        return found, max(0, min(count, _UIO_MAXIOV) - MAX_MESSAGES)
    return [], 0


def _message_destination(memory: Memory, header: int) -> list[Destination]:
    data = memory.read(header, 12)  # struct msghdr: void *msg_name; socklen_t msg_namelen
    if len(data) < 12:
        return []
    name, length = struct.unpack("<QI", data)
    return _destination(memory, name, length)


def _destination(memory: Memory, address: int, length: int) -> list[Destination]:
    data = memory.read(address, min(length & 0xFFFFFFFF, _SOCKADDR_MAX))
    if len(data) < 8:
        return []
    family, port = struct.unpack("<H", data[:2])[0], struct.unpack(">H", data[2:4])[0]
    if family == _AF_INET:
        return [Destination(socket.inet_ntop(socket.AF_INET, data[4:8]), port)]
    if family == _AF_INET6 and len(data) >= 24:
        return [Destination(socket.inet_ntop(socket.AF_INET6, data[8:24]), port)]
    return []


_PROTOCOLS: Final[Mapping[str, str]] = {
    "TCP": "tcp", "TCPv6": "tcp", "UDP": "udp", "UDPv6": "udp", "RAW": "raw", "RAWv6": "raw",
    "UDPLITE": "udplite", "UDPLITEv6": "udplite", "MPTCP": "mptcp", "MPTCPv6": "mptcp",
    "SCTP": "sctp", "SCTPv6": "sctp", "PING": "icmp", "PINGv6": "icmp"}


def protocol_of(pid: int, fd: int, owner: tuple[int, int] | None = None) -> str:
    """``tcp``, ``udp``, ... of the socket *fd* of the process *pid*, from its protocol's
    name (the ``system.sockprotoname`` attribute of ``/proc/PID/fd/FD``, read as *owner*
    where this process may not otherwise look); ``?`` when it cannot be read.

    Never a copy of the descriptor: the build could make the copy's close the socket's
    last, and a lingering close would hold the supervisor."""
    path = f"/proc/{pid}/fd/{fd & 0x7FFFFFFF}"
    try:
        name = _as_self_else_owner(lambda: os.getxattr(path, "system.sockprotoname"), owner)
    except OSError:
        return "?"
    return _PROTOCOLS.get(name.rstrip(b"\0").decode("ascii", "replace"), "?")
