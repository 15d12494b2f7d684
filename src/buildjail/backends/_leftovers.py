"""What outlived the command: the processes still running once it exited, as attempts.

The init looks where it adopts every orphan of the command (pid 1 of the sandbox's pid
namespace, or a child subreaper): whatever the command left running is below it. A process
that is only winding down (a resource tracker reading its pipe's end) gets GRACE to exit;
what still runs then is recorded as an ``outlived`` attempt, before the sandbox kills it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Iterable

from .._linux.procfs import command_line, descendants, is_running
from ..attempts import AttemptLog, attempt

GRACE = 0.25
"""Seconds a process may take to exit on its own after the command did."""
MAX_RECORDED = 64
"""Leftover processes whose command lines are read; the others are counted as omitted."""
MAX_WALKED = 10000
"""Processes walked at most: a build forking as fast as it can does not hold the init."""
_POLL = 0.01


def record_leftovers(log: AttemptLog, ignored: Iterable[int | None],
                     grace: float = GRACE, *, stop_all: bool = False) -> bool:
    """Add to *log* the processes below this one, *ignored* aside, still running *grace*
    seconds after the command exited (at once where none is); False where more than
    MAX_WALKED processes were there to look at (the record is not whole).

    *stop_all*: stop every process this one can signal (``kill(-1)``: the sandbox's init
    only, whose signals reach the sandbox alone) before the last look, so that what is read
    holds still: a process that forks itself anew and exits, again and again, is otherwise
    gone from where a walk of the children lists looks each time it looks.
    """
    skip = {pid for pid in ignored if pid is not None} | {os.getpid()}
    deadline = time.monotonic() + grace
    while True:
        _reap_exited()
        left, whole = _running_below(skip)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(_POLL)
    if stop_all:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGSTOP)  # a stopped process neither forks nor exits
        _reap_exited()
        left, whole = _running_below(skip)
        if left:  # one already exiting when stopped ends within a moment
            time.sleep(_POLL)
            _reap_exited()
            left, whole = _running_below(skip)
    for pid in left[:MAX_RECORDED]:
        argv = command_line(pid)
        if argv:  # gone since
            log.add(attempt("outlived", argv=shlex.join(argv)))
    log.lost("outlived", len(left) - MAX_RECORDED)
    return whole


def _running_below(skip: set[int]) -> tuple[list[int], bool]:
    """The running processes below this one, not in *skip*, at most MAX_WALKED walked; and
    whether that was all of them."""
    found: list[int] = []
    for count, pid in enumerate(descendants(os.getpid())):
        if count >= MAX_WALKED:
            return found, False
        if pid not in skip and is_running(pid):
            found.append(pid)
    return found, True


def _reap_exited() -> None:
    """Reap this process's children that have exited (adopted orphans among them)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
