"""The init's record of what the build tried: decoy opens and DNS names, bounded.

Everything here runs in the sandbox's init, which sets it up before the build starts and
reads it while it reaps (see ``docs/architecture.md``: why the build cannot hide from it).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import stat
import time
from collections.abc import Callable

from .._linux.dns import DnsTrap
from .._linux.inotify import DecoyWatch
from ..attempts import AttemptLog, attempt, to_json
from .base import SetUp

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from .messages import InitStatus

WRAPPED_SETUP_TIMEOUT = 30.0
"""How long the init waits for bubblewrap to build its view before it records no decoy."""
_WRAPPED_TICK_MS = 2


class Recorder:
    """The decoy watch and the DNS trap of one sandbox, and the log they fill."""

    def __init__(self, setup: SetUp, decoy_fd: int | None = None) -> None:
        self.setup = setup
        self.decoy_fd = decoy_fd
        """The caller's inotify instance to watch the decoys with (None: one of its own)."""
        self.log = AttemptLog()
        self.trap = DnsTrap() if setup.dns_trap else None
        self.watch: DecoyWatch | None = None
        self.unrecorded: dict[str, str] = {}

    def watch_decoys(self, root: str = "",
                     accept: Callable[[os.stat_result], bool] = lambda _: True) -> None:
        """Watch the decoys, seen under *root* (a wrapped sandbox's ``/proc/<pid>/root``)."""
        if self.setup.decoys:
            shown = {root + path: name for path, name in self.setup.decoys}
            self.watch = DecoyWatch(shown, accept, self.decoy_fd)

    def sockets(self) -> tuple[socket.socket, ...]:
        """The recording's own sockets in the sandbox's network namespace (the DNS trap)."""
        return (self.trap.sock,) if self.trap is not None else ()

    def fds(self) -> list[int]:
        """The descriptors to poll for attempts."""
        fds = [self.trap.fileno()] if self.trap else []
        return fds + ([self.watch.fd] if self.watch else [])

    def drain(self) -> None:
        """Record what is waiting, a bounded amount of it; a failure stops the recording
        (said in the report), never the sandbox."""
        try:
            self._drain()
        except Exception as error:  # whatever it is, the build goes on
            self.stop(f"not recorded: the recording stopped: {error!r}"[:300])

    def stop(self, why: str) -> None:
        """Stop recording: close the trap and the watch, and say *why* for each kind."""
        for kind, running in (("dns", self.trap), ("credentials", self.watch)):
            if running is not None:
                self.unrecorded[f"attempts:{kind}"] = why
        self._close()

    def _close(self) -> None:
        for closing in (self.trap, self.watch):
            if closing is not None:
                closing.close()
        self.trap = self.watch = None

    def _drain(self) -> None:
        log = self.log
        if self.trap is not None:
            self.trap.drain(lambda name: log.add(attempt("dns", name=name)),
                            lambda size: log.add(attempt("dns", malformed="true",
                                                         bytes=str(size))),
                            lambda count: log.lost("dns", count))
        if self.watch is not None:
            self.watch.drain(lambda name: log.add(attempt("credential", path=name)),
                             lambda: log.lost("credential", 1))

    def finish(self, rounds: int = 64) -> None:
        """Record what the build left queued when it ended, then stop."""
        for _ in range(rounds):
            ready = select.select(self.fds(), [], [], 0)[0] if self.fds() else []
            if not ready:
                break
            self.drain()
        self._close()

    def fill(self, report: InitStatus) -> None:
        """Add to the init's *report* the attempts, how many were omitted, what was not
        recorded."""
        report["attempts"] = to_json(self.log.attempts)
        report["attempts_omitted"] = dict(self.log.omitted)
        if self.unrecorded:
            report["unrecorded"] = dict(self.unrecorded)


def release_wrapped(recorder: Recorder, block_fd: int, child_pid: Callable[[], int | None],
                    running: Callable[[], bool], outside: Callable[[str], bool]) -> None:
    """Watch a wrapped sandbox's decoys once its tool has built the view, then let it go on.

    bubblewrap blocks on *block_fd* after it switched to the new root and dropped its
    privileges, before the command runs: the decoys are then on its own home tmpfs, which
    *outside* tells from the host's files. A byte on *block_fd* releases it (the
    supervisor holds the pipe's write end too: closing alone is no EOF).
    """
    deadline = time.monotonic() + WRAPPED_SETUP_TIMEOUT
    try:
        while running() and time.monotonic() < deadline:
            pid = child_pid()
            root = f"/proc/{pid}/root" if pid else ""
            if root and recorder.setup.decoys and outside(root + recorder.setup.decoys[0][0]):
                try:
                    recorder.watch_decoys(root, _regular_file)
                except OSError as error:
                    recorder.unrecorded["attempts:credentials"] = f"not watched: {error}"
                return
            select.select([], [], [], _WRAPPED_TICK_MS / 1000)
        recorder.unrecorded["attempts:credentials"] = "bubblewrap's view was not seen in time"
    finally:
        with contextlib.suppress(OSError):
            os.write(block_fd, b"x")
        with contextlib.suppress(OSError):
            os.close(block_fd)


def _regular_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1
