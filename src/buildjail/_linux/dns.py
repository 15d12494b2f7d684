"""A resolver on the sandbox's own loopback that answers nothing and records each name.

The sandbox's ``/etc/resolv.conf`` names 127.0.0.1; the init binds UDP port 53 there in the
sandbox's network namespace before the build starts (the port is privileged, and the build
has no capability to take it). Each query is parsed defensively — bounded size, at most one
question, a bounded name, a few compression pointers, backwards only — and answered REFUSED
at once, so resolution fails as fast as with no resolver at all.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable

from .usage import SK_MEMINFO_DROPS, socket_meminfo

RESOLV_CONF = b"nameserver 127.0.0.1\noptions attempts:1 timeout:1\n"
"""The sandbox's /etc/resolv.conf where names are recorded."""
MAX_PACKET = 4096
MAX_NAME = 255
MAX_POINTERS = 8
RECEIVES_PER_DRAIN = 256
"""Datagrams handled per call, so that a flood never keeps the init from reaping."""
_HEADER = struct.Struct("!HHHHHH")
_REFUSED = 5
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*")


class MalformedQueryError(ValueError):
    """A datagram that is not a DNS query buildjail will read."""


def parse_query(packet: bytes) -> tuple[str, bytes]:
    """The name a DNS query asks for, and the REFUSED answer to it; MalformedQueryError if none."""
    if len(packet) < _HEADER.size or len(packet) > MAX_PACKET:
        raise MalformedQueryError("size")
    ident, flags, questions, _, _, _ = _HEADER.unpack_from(packet)
    if flags & 0x8000 or questions != 1:
        raise MalformedQueryError("not one question")
    name, end = read_name(packet, _HEADER.size)
    if end + 4 > len(packet):
        raise MalformedQueryError("truncated question")
    answer_flags = 0x8000 | (flags & 0x7900) | 0x0080 | _REFUSED  # opcode and RD kept
    answer = _HEADER.pack(ident, answer_flags, 1, 0, 0, 0) + packet[_HEADER.size:end + 4]
    return name, answer


def read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """The name at *offset* (escaped, lower case) and where the question goes on."""
    labels: list[str] = []
    length = 0
    end = None
    pointers = 0
    while True:
        if offset >= len(packet):
            raise MalformedQueryError("name runs past the packet")
        size = packet[offset]
        if size & 0xC0 == 0xC0:
            if offset + 1 >= len(packet) or pointers >= MAX_POINTERS:
                raise MalformedQueryError("compression pointer")
            target = ((size & 0x3F) << 8) | packet[offset + 1]
            if target >= offset:
                raise MalformedQueryError("compression pointer forwards")
            end = offset + 2 if end is None else end
            pointers += 1
            offset = target
            continue
        if size & 0xC0:
            raise MalformedQueryError("label type")
        if size == 0:
            break
        label = packet[offset + 1:offset + 1 + size]
        length += size + 1
        if len(label) < size or length > MAX_NAME:
            raise MalformedQueryError("label")
        labels.append(escape_label(label))
        offset += size + 1
    return ".".join(labels) or ".", offset + 1 if end is None else end


def escape_label(label: bytes) -> str:
    """A label as text: letters, digits, ``-`` and ``_`` as they are, other bytes ``\\DDD``."""
    return "".join(chr(byte) if byte in _SAFE else f"\\{byte:03d}" for byte in label.lower())


class DnsTrap:
    """UDP 127.0.0.1:53 in the current network namespace: records names, answers REFUSED."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(("127.0.0.1", 53))
        except BaseException:
            self.sock.close()
            raise
        self.dropped = 0

    def fileno(self) -> int:
        """The socket's descriptor, to poll."""
        return self.sock.fileno()

    def drain(self, asked: Callable[[str], None], malformed: Callable[[int], None],
              lost: Callable[[int], None], receives: int = RECEIVES_PER_DRAIN) -> None:
        """Handle the queries waiting: each name to *asked*; answer each one REFUSED; the
        count of those the kernel dropped (the queue was full) to *lost*."""
        try:
            self._receive(asked, malformed, receives)
        finally:
            total = self._drops()
            lost(total - self.dropped)
            self.dropped = max(self.dropped, total)

    def _receive(self, asked: Callable[[str], None], malformed: Callable[[int], None],
                 receives: int) -> None:
        for _ in range(receives):
            try:
                data, _, flags, sender = self.sock.recvmsg(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                if flags & socket.MSG_TRUNC:
                    raise MalformedQueryError("size")
                name, answer = parse_query(data)
            except MalformedQueryError:
                malformed(len(data))
                continue
            asked(name)
            with contextlib.suppress(OSError):
                self.sock.sendto(answer, sender)

    def _drops(self) -> int:
        """How many datagrams the kernel dropped on this socket so far (SO_MEMINFO)."""
        info = socket_meminfo(self.sock)
        return self.dropped if info is None else info[SK_MEMINFO_DROPS]

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()
