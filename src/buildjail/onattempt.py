"""``on_attempt = "fail"``: a build that tried the network or a decoy fails, and so, closed,
does one whose attempts could not be recorded.

The build frontends (``build.py``, ``fromager/steps.py``) judge each sandboxed run with
:func:`judge`, and before any runs, :func:`check_recording` refuses what can never record
(a policy without a network namespace and view of its own, the ``landlock`` backend). What
counts as suspicious is :func:`buildjail.attempts.suspicious`: every kind but ``exec``.
"""

from __future__ import annotations

from . import attempts
from .backends import not_recorded, resolved
from .errors import BuildjailError, SandboxSetupError
from .policy import Policy
from .result import RunResult

FIX = "run it where the sandbox has a network namespace and a filesystem view of its own " \
      "(the full profile, on the native or bwrap backend), or use --on-attempt warn"
FIX_IN_FULL = ("the sandbox records it, but this run's record is not whole (see the reason): "
               "run it again, as root where a process hid its memory, or use --on-attempt warn")
"""Where the run recorded but lost some of it: a network namespace would not help."""


class AttemptsRefusedError(BuildjailError):
    """A run tried the network or a decoy, and the policy's ``on_attempt`` is ``fail``."""

    def __init__(self, what: str, why: str) -> None:
        self.why = f'{why} (on_attempt = "fail")'
        """What it tried, in one line, without the run's name."""
        super().__init__(f"{what} {self.why}")


class AttemptsUnrecordedError(SandboxSetupError):
    """``on_attempt`` is ``fail``, but what a run tried was not (or not all) recorded."""


def failing(policy: Policy) -> bool:
    """Whether *policy* fails the builds that try the network or a decoy."""
    return policy.on_attempt == "fail"


def check_recording(policy: Policy, backend: str) -> None:
    """Refuse, before anything runs, a failing *policy* (as a frontend runs it: recording
    where it can) that *backend* can never record the attempts of: AttemptsUnrecordedError."""
    if not failing(policy):
        return
    if policy.record_attempts is not True or not policy.filesystem or (
            "net" not in policy.namespaces):
        raise AttemptsUnrecordedError(
            f'on_attempt = "fail", but the policy {policy.name} records no attempts (it has no '
            "network namespace and filesystem view of its own)", FIX)
    missing = not_recorded(backend)
    if missing:
        layer, why = next(iter(missing.items()))
        raise AttemptsUnrecordedError(f'on_attempt = "fail", but the {resolved(backend)} backend '
                                 f"cannot record the attempts: {layer} {why}", FIX)


def judge(result: RunResult, policy: Policy, what: str) -> None:
    """Under a failing *policy*, fail the run *what* names (``the build_wheel hook``) that was
    not recorded whole (AttemptsUnrecordedError) or tried the network or a decoy
    (AttemptsRefusedError). A run a limit stopped failed already: what its init recorded
    went with it, and the limit stays the reason (what the supervisor recorded is judged)."""
    if not failing(policy):
        return
    missing = attempts.unrecorded(result.layers, result.degraded)
    if missing and not result.limit_hit:
        layer, why = next(iter(missing.items()))
        partly = layer in result.layers
        raise AttemptsUnrecordedError(f'on_attempt = "fail", but what {what} tried was not '
                                      f"recorded: {layer} {why}", FIX_IN_FULL if partly else FIX)
    why = attempts.refusal(result.attempts, result.attempts_omitted)
    if why:
        raise AttemptsRefusedError(what, why)
