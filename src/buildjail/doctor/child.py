"""Run one probe in a forked child, as root or non-root, and read back what it reports."""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
from collections.abc import Callable
from typing import Any, NoReturn

from .._linux import kernel as k
from .._linux import userns
from ..errors import SandboxSetupError
from .report import IDENTITIES, IdentityKind

_NOBODY = 65534
_PROBE_TIMEOUT = 10.0

# Stages whose failure means "the non-root path could not be entered".
DROP = "switch to uid 65534"
USERNS = "unshare user"
USERNS_MAP = "write the uid/gid maps"
ROOT_USERNS = "enter a user namespace mapping every id (root without CAP_SYS_ADMIN)"


class Stages:
    """Records the step a probe is at, so that a failure names it."""

    def __init__(self) -> None:
        self.current = "start"

    def __call__(self, name: str) -> None:
        self.current = name


Probe = Callable[[Stages, IdentityKind], str]
"""A layer's probe: does the layer for *who* in the probe child, returns what it saw."""


class Degraded(Exception):  # noqa: N818 - a probe's outcome, not an error
    """Raised by a probe whose layer works only weaker, as the container allows."""

    def __init__(self, detail: str, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.detail, self.reason, self.fix = detail, reason, fix


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer to probe: its name, its probe, and for whom ``full`` needs it."""

    name: str
    probe: Probe
    privileged: bool = True
    required: tuple[IdentityKind, ...] = IDENTITIES
    backend: str = "native"


def _run_child(stages: Stages, who: IdentityKind, layer: Layer, report_fd: int) -> NoReturn:
    message: dict[str, Any]
    try:
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)
        _become(stages, who, layer.privileged)
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)  # a credential change cleared it
        message = {"ok": True, "detail": layer.probe(stages, who)}
    except Degraded as degraded:
        message = {"ok": True, "detail": degraded.detail, "degraded": degraded.reason,
                   "fix": degraded.fix}
    except SandboxSetupError as error:
        message = {"ok": False, "stage": stages.current, "errno": None,
                   "error": error.reason, "reason": error.reason, "fix": error.fix}
    except OSError as error:
        message = {"ok": False, "stage": stages.current, "errno": error.errno,
                   "error": error.strerror or str(error)}
    except BaseException as error:  # a probe child never returns
        message = {"ok": False, "stage": stages.current, "errno": None, "error": str(error)}
    try:
        os.write(report_fd, json.dumps(message).encode())
    finally:
        os._exit(0)


def run_probe(layer: Layer, who: IdentityKind) -> dict[str, Any]:
    """Run *layer*'s probe for *who* in a forked child; return its report."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _run_child(Stages(), who, layer, write_fd)
    os.close(write_fd)
    try:
        status = _wait_for(pid)
        data = _drain(read_fd)
    finally:
        os.close(read_fd)
    if data:
        return json.loads(data)  # type: ignore[no-any-return]
    how = "timed out" if status is None else f"exited with status {status}"
    return {"ok": False, "stage": "probe", "errno": None, "error": f"the probe {how}"}


def _wait_for(pid: int) -> int | None:
    """Wait for *pid* (killing it after _PROBE_TIMEOUT); return its exit code, None on timeout."""
    pidfd = os.pidfd_open(pid)
    try:
        timed_out = not select.select([pidfd], [], [], _PROBE_TIMEOUT)[0]
    finally:
        os.close(pidfd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return None if timed_out else os.waitstatus_to_exitcode(status)


def _drain(fd: int) -> bytes:
    """Read what is in the pipe now; grandchildren may still hold its write end."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def in_grandchild(action: Callable[[], None]) -> None:
    """Run *action* in a child (e.g. pid 1 of a new pid namespace); re-raise its errno."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            action()
        except OSError as error:
            code = min(error.errno or 255, 255)
        except BaseException:  # a probe child never returns
            code = 255
        os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 255 or code < 0:
        raise RuntimeError(f"the check in the new pid namespace failed ({code})")
    if code:
        raise OSError(code, os.strerror(code))


# --- entering an identity -------------------------------------------------------


def _become(stages: Stages, who: IdentityKind, privileged: bool) -> None:
    """Turn this child into *who*; with *privileged*, enter a user namespace as non-root."""
    if who == "root":
        if privileged and userns.contained_root():  # as the sandbox itself starts there
            stages(ROOT_USERNS)
            userns.unshare_user(all_ids=True)
            _entered[0] = True
        return
    if os.geteuid() == 0:
        stages(DROP)
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
        k.prctl(k.PR_SET_DUMPABLE, 1)  # as after execve: /proc/self stays ours
    if privileged:
        uid, gid = os.getuid(), os.getgid()
        stages(USERNS)
        k.unshare(k.CLONE_NEWUSER)
        stages(USERNS_MAP)
        k.map_current_ids(uid, gid, uid, gid)


def in_id_mapped_namespace() -> bool:
    """Whether this probe entered the user namespace root without CAP_SYS_ADMIN starts in."""
    return _entered[0]


_entered = [False]
"""Set in a probe child by :func:`_become` when it entered that user namespace."""

