"""The outcome of one sandboxed command."""

from __future__ import annotations

from collections.abc import Mapping

from .attempts import Attempt, summary, to_json

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ._records import NamedTuple


class RunResult(NamedTuple):
    """Exit code, wall time, the isolation layers enforced (degraded ones named), the limit hit.

    An immutable record (a named tuple: start-up time, issue 15).
    """

    exit_code: int
    duration: float
    layers: tuple[str, ...]
    limit_hit: str | None = None
    signal: int | None = None
    backend: str = "native"
    policy: str = "full"
    uid: int | None = None
    degraded: Mapping[str, str] = {}  # shared by records that take it: read-only, typed so
    """Layers the runtime forbids and the sandbox kept weaker (e.g. ``hostname``): why."""
    attempts: tuple[Attempt, ...] = ()
    """What the build tried that the sandbox recorded (DNS names, decoys opened)."""
    attempts_omitted: Mapping[str, int] = {}  # as degraded
    """Attempts of each kind past the recording's cap, or dropped by the kernel: counted
    only (``{"dns": 12}``)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dictionary."""
        return {**self._asdict(), "layers": list(self.layers), "degraded": dict(self.degraded),
                "attempts": to_json(self.attempts),
                "attempts_omitted": dict(self.attempts_omitted)}

    @property
    def attempts_summary(self) -> str:
        """One line, ``tried: DNS pypi.org; read decoy ~/.netrc``; empty when none."""
        return summary(self.attempts, self.attempts_omitted)
