"""Build logs: opened safely, hooks' output copied through a pipe, tails bounded and escaped.

A hook never gets the log file itself as its output: it writes to a pipe that buildjail
copies into the log, so it cannot read back (through ``/proc/self/fd/1``) what buildjail
wrote there. Everything buildjail writes itself has credentials in URLs redacted
(``https://user:***@host``). Logs are created with ``O_EXCL | O_NOFOLLOW`` in a directory
the caller owns and nobody else can write to. What is shown of a log comes from a bounded
tail (the last bytes of the hook's output, kept as they pass), with control characters
escaped before it reaches a terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import stat
import tempfile
import threading
from types import TracebackType

from .credentials import redact
from .errors import BuildjailError

MAX_LOG_SIZE = 1 << 30
"""Bytes of a hook's output copied into its log; the rest is counted and dropped."""
TAIL_BYTES = 64 << 10
"""Bytes kept from the end of a hook's output for its failure message."""
TAIL_LINES = 40
"""Lines of a log shown when a hook fails."""
DRAIN_BYTES = 1 << 20
"""How much output is still copied after the sandbox ended. What the hook wrote is at most a
pipe's worth; more comes only from a process the sandbox did not kill (under a profile
without ``kill_all``), which is then cut off. No time limit: a copy slowed down by a busy
disk must not lose the end of the log."""
_NAMES_TRIED = 100


class LogDirectoryError(BuildjailError):
    """A log directory that is not the caller's own, or not private to it."""


def tail_lines(data: bytes, lines: int = TAIL_LINES, *, complete: bool = True) -> str:
    """The last *lines* lines of *data*; the first is dropped unless *complete* (a cut one)."""
    text = data.decode("utf-8", errors="replace")
    found = text.rstrip("\n").split("\n")  # only newlines: a CR stays, to be escaped
    if not complete and found:
        found = found[1:]
    return "\n".join(found[-lines:])


def private_directory(path: str, option: str = "--logs") -> int:
    """Open (creating it 0700 if missing) a directory only the caller may write to.

    Refuses a symbolic link as the directory itself, and a directory another user owns or
    others may write to: there, another user could plant a link or read the logs.
    """
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise LogDirectoryError(f"{option} {path}: {error.strerror} (it must be a directory "
                                "you own, not a symbolic link)") from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise LogDirectoryError(
            f"{option} {path}: owned by uid {info.st_uid} with mode "
            f"{stat.S_IMODE(info.st_mode):03o}; it must be a directory you own that no one "
            "else can write to")
    return fd


def default_directory() -> tuple[int, str]:
    """This user's log directory in the temporary directory, or a fresh one if it is taken."""
    path = os.path.join(tempfile.gettempdir(), f"buildjail-logs-{os.geteuid()}")
    try:
        return private_directory(path), path
    except LogDirectoryError:
        path = tempfile.mkdtemp(prefix="buildjail-logs-")  # someone else's name: not ours
        return private_directory(path), path


class BuildLog:
    """One package's log: a file created by buildjail alone, written with secrets redacted."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def create(cls, directory_fd: int, directory: str, stem: str) -> BuildLog:
        """Create ``STEM.log`` (or ``STEM-N.log`` if taken) in the open *directory_fd*."""
        stem = _safe_stem(stem)
        flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND
                 | os.O_CLOEXEC)
        for number in range(1, _NAMES_TRIED + 1):
            name = f"{stem}.log" if number == 1 else f"{stem}-{number}.log"
            try:
                fd = os.open(name, flags, 0o600, dir_fd=directory_fd)
            except FileExistsError:
                continue
            return cls(fd, os.path.join(directory, name))
        fd, path = tempfile.mkstemp(prefix=f"{stem}-", suffix=".log", dir=directory)
        return cls(fd, path)

    def write(self, text: str) -> None:
        """Append *text*, credentials in URLs redacted."""
        _write_all(self.fd, redact(text).encode("utf-8", errors="replace"))

    def close(self) -> None:
        """Close the log file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _safe_stem(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", stem).lstrip(".")
    return cleaned[:100] or "build"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class HookOutput:
    """A pipe for a hook's standard output and error, copied into *target* by a thread.

    The hook sees only the pipe. The copy stops at MAX_LOG_SIZE bytes (noting how much was
    dropped) and keeps the last TAIL_BYTES for the failure message. Use as a context
    manager; on exit, what is still in the pipe is copied, then the pipe is closed (a
    process the sandbox did not kill then gets EPIPE).
    """

    def __init__(self, target: int, limit: int = MAX_LOG_SIZE) -> None:
        self.target = target
        self.limit = limit
        self.copied = 0
        self.dropped = 0
        self._tail = bytearray()
        self._read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._copy, name="buildjail-hook-output",
                                        daemon=True)

    def __enter__(self) -> HookOutput:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close_write_end()
        self._stop.set()
        self._thread.join()
        os.close(self._read_fd)
        if self.dropped:
            note = (f"\nbuildjail: {self.dropped} more bytes of output were dropped "
                    f"(the log keeps {self.limit})\n")
            with contextlib.suppress(OSError):
                _write_all(self.target, note.encode())

    def close_write_end(self) -> None:
        """Close buildjail's copy of the pipe's write end (the sandbox has its own)."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of what the hook wrote (from at most TAIL_BYTES)."""
        complete = self.copied + self.dropped <= len(self._tail)
        return tail_lines(bytes(self._tail), lines, complete=complete)

    def _copy(self) -> None:
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        after_stop = 0
        while True:
            ready = poller.poll(100)
            stopping = self._stop.is_set()
            if stopping and (not ready or after_stop > DRAIN_BYTES):
                return  # what a process the sandbox did not kill keeps writing is lost
            if not ready:
                continue
            chunk = os.read(self._read_fd, 1 << 16)
            if not chunk:
                return
            if stopping:
                after_stop += len(chunk)
            self._keep(chunk)

    def _keep(self, chunk: bytes) -> None:
        self._tail += chunk
        del self._tail[:-TAIL_BYTES]
        room = self.limit - self.copied
        if room > 0:
            try:
                _write_all(self.target, chunk[:room])
            except OSError:
                room = 0  # a full disk or a closed target: keep draining the pipe
        used = max(0, min(room, len(chunk)))
        self.copied += used
        self.dropped += len(chunk) - used
