"""The supervisor's record of the calls the recording filter stops: programs and addresses.

The init starts the command under :func:`.._linux.seccomp.build_recording_filter` and sends
its listener here (see ``docs/architecture.md``); the supervisor, outside the sandbox,
reads each stopped ``execve`` or ``connect``/``send*`` from the caller's memory, records it
and lets it go on unchanged. A failure to read one is counted, never a reason to stop the
call: the recording must not change what the build gets.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
from collections.abc import Iterable, Sequence

from .._linux import usernotify
from ..attempts import AttemptLog, attempt, to_json

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from .messages import Outcome

KINDS = ("exec", "connect")
"""The kinds of attempt recorded here, as named in the layers (``attempts:exec``)."""


class CallRecorder:
    """The listener of one sandbox's recording filter, once the init has sent it."""

    def __init__(self, channel: socket.socket, startup: Iterable[Sequence[str]],
                 owner: tuple[int, int] | None = None) -> None:
        self.channel: socket.socket | None = channel
        self.listener: int | None = None
        self.startup = {tuple(usernotify.as_read(argv)) for argv in startup}
        """The argument lists the sandbox itself starts before the build runs (the command
        as the init spawns it; bubblewrap, then the command): not the build's attempts."""
        self.started = False
        self.owner = owner
        """The build's (uid, gid), where they are not the supervisor's own."""
        self.unreadable_startup = 1
        """Start-up programs whose memory may not be readable: the command as the init
        spawns it (the init's memory, which its uid cannot read)."""
        self.log = AttemptLog()
        self.unrecorded: dict[str, str] = {}

    def fds(self) -> list[int]:
        """The descriptor to poll: the channel until the listener came, then the listener."""
        if self.channel is not None:
            return [self.channel.fileno()]
        return [] if self.listener is None else [self.listener]

    def ready(self, events: int) -> None:
        """Handle what polling the descriptor of :meth:`fds` reported."""
        if self.channel is not None:
            self._take_listener()
        elif self.listener is not None and events & select.POLLIN:
            self._answer_one()
        elif self.listener is not None:  # every process under the filter is gone
            self.close()

    def _take_listener(self) -> None:
        assert self.channel is not None
        try:
            _, fds, _, _ = socket.recv_fds(self.channel, 16, 4)
        except OSError as error:
            fds = []
            self._unrecorded(f"not recorded: the recording filter's listener did not come "
                             f"({error.strerror})")
        self.channel.close()
        self.channel = None
        for extra in fds[1:]:
            os.close(extra)
        if fds:
            self.listener = fds[0]
            os.set_blocking(self.listener, True)
        # else: the init said why in its own report (the filter could not be installed)

    def _answer_one(self) -> None:
        listener = self.listener
        assert listener is not None
        try:
            stopped = usernotify.receive(listener)
        except OSError as error:  # closing the listener fails the calls: said, and loud
            self._unrecorded(f"not recorded: the recording filter's listener failed "
                             f"({error.strerror})")
            self.close()
            return
        if stopped is None:
            return
        try:
            self._record(listener, stopped)
        except Exception as error:  # recording is evidence: whatever it is, the call goes on
            self._unrecorded(f"not recorded in full: {error!r}"[:300])
        finally:
            usernotify.let_continue(listener, stopped)

    def _record(self, listener: int, stopped: usernotify.Notification) -> None:
        kind = "exec" if stopped.call.startswith("exec") else "connect"
        try:
            memory = usernotify.Memory(stopped.pid, self.owner)
        except OSError as error:
            self._unreadable(kind, error)
            return
        try:
            if kind == "exec":
                self._record_program(listener, stopped, memory)
            else:
                self._record_destinations(listener, stopped, memory)
        except OSError as error:
            self._unreadable(kind, error)
        finally:
            memory.close()

    def _record_program(self, listener: int, stopped: usernotify.Notification,
                        memory: usernotify.Memory) -> None:
        path, argv = usernotify.program_of(stopped, memory)
        if not usernotify.still_waiting(listener, stopped):
            return  # its caller died: what was read may be another's
        if not self.started and tuple(argv) in self.startup:
            return
        self.started = True
        # By its arguments, and its path only where that names another program than its
        # first argument: a command looked up on PATH is one execve per directory.
        named = os.path.basename(argv[0]) if argv else ""
        shown = {} if os.path.basename(path) == named else {"path": path}
        self.log.add(attempt("exec", argv=shlex.join(argv), **shown))

    def _record_destinations(self, listener: int, stopped: usernotify.Notification,
                             memory: usernotify.Memory) -> None:
        named, unread = usernotify.destinations_of(stopped, memory)
        found = [where for where in named if not where.loopback]
        if not usernotify.still_waiting(listener, stopped):
            return
        self.log.lost("connect", unread)  # not read: counted, as if past the cap
        if not found:
            return
        protocol = usernotify.protocol_of(stopped.pid, stopped.args[0], self.owner)
        for where in found:
            self.log.add(attempt("connect", address=where.address, port=str(where.port),
                                 protocol=protocol))

    def _unreadable(self, kind: str, error: OSError) -> None:
        """A stopped call whose memory could not be read: before the build started, the
        sandbox's own start (its init's memory is not the caller's to read); after, counted
        and said."""
        if kind == "exec" and not self.started and self.unreadable_startup:
            self.unreadable_startup -= 1
            return
        self.log.lost(kind, 1)
        self.unrecorded.setdefault(
            f"attempts:{kind}", f"not recorded in full: a process's memory could not be read "
                                f"({error.strerror}; reading it needs the build's uid or "
                                f"CAP_SYS_PTRACE)")

    def _unrecorded(self, why: str) -> None:
        for kind in KINDS:
            self.unrecorded.setdefault(f"attempts:{kind}", why)

    def close(self) -> None:
        """Stop listening (a call still stopped fails with ENOSYS: nothing else is left)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.listener is not None:
            with contextlib.suppress(OSError):
                os.close(self.listener)
            self.listener = None

    def fill(self, outcome: Outcome) -> None:
        """Add the recorded calls to the run's *outcome*, beside the init's attempts."""
        outcome["attempts"] = [*outcome.get("attempts", []), *to_json(self.log.attempts)]
        omitted = dict(outcome.get("attempts_omitted", {}))
        for kind, count in self.log.omitted.items():
            omitted[kind] = omitted.get(kind, 0) + count
        outcome["attempts_omitted"] = omitted
        if self.unrecorded:
            outcome["unrecorded"] = {**self.unrecorded, **outcome.get("unrecorded", {})}
