"""Watching the credential decoys for opens, with inotify, from the sandbox's init.

The watches are added by trusted code before the build starts, on files the sandbox made
(never a path the build could have placed), and follow the inode: a hard link or a rename
made later is still the decoy. Reading events is bounded per call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Callable, Mapping

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = (ctypes.c_int,)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)

IN_OPEN = 0x20
IN_Q_OVERFLOW = 0x4000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
_BUFFER = 4096
READS_PER_DRAIN = 64
"""Buffers read per call, so that a flood of opens never keeps the init from reaping."""


def new_instance() -> int:
    """A new inotify instance (non-blocking, close-on-exec); OSError when none can be had."""
    fd: int = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"inotify_init1: {os.strerror(error)}")
    return fd


class DecoyWatch:
    """An inotify instance watching files for opens; *shown* maps each path to its name.

    *fd*: an instance of its own to use (a copy of the caller's, which closes it last and
    off the path a run waits on: closing an instance's last reference waits for the kernel
    to destroy its watches, 7-15 ms); None makes one.
    """

    def __init__(self, shown: Mapping[str, str],
                 accept: Callable[[os.stat_result], bool] = lambda _: True,
                 fd: int | None = None) -> None:
        self.fd = new_instance() if fd is None else fd
        self.names: dict[int, str] = {}
        try:
            for path, name in shown.items():
                self._watch(path, name, accept)
        except BaseException:
            os.close(self.fd)
            raise

    def _watch(self, path: str, name: str, accept: Callable[[os.stat_result], bool]) -> None:
        info = os.lstat(path)
        if not accept(info):
            raise OSError(0, f"{path} is not the sandbox's decoy")
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_DONT_FOLLOW)
        if wd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_add_watch {path}: {os.strerror(error)}")
        self.names[wd] = name

    def drain(self, opened: Callable[[str], None], overflowed: Callable[[], None],
              reads: int = READS_PER_DRAIN) -> None:
        """Report each opened decoy's name, and each queue overflow, read so far."""
        for _ in range(reads):
            try:
                data = os.read(self.fd, _BUFFER)
            except BlockingIOError:
                return
            if not data:
                return
            for wd, mask in parse_events(data):
                if mask & IN_Q_OVERFLOW:
                    overflowed()
                elif mask & IN_OPEN and wd in self.names:
                    opened(self.names[wd])

    def close(self) -> None:
        """Remove the watches."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def parse_events(data: bytes) -> list[tuple[int, int]]:
    """(watch descriptor, mask) of each whole event in *data*."""
    events = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size + length
        if offset > len(data):
            break
        events.append((wd, mask))
    return events
