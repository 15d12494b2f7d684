"""The outcome of one sandboxed command."""

from __future__ import annotations

import dataclasses

from .attempts import Attempt, summary, to_json

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Any


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Exit code, wall time, the isolation layers enforced (degraded ones named), the limit hit."""

    exit_code: int
    duration: float
    layers: tuple[str, ...]
    limit_hit: str | None = None
    signal: int | None = None
    backend: str = "native"
    policy: str = "full"
    uid: int | None = None
    degraded: dict[str, str] = dataclasses.field(default_factory=dict)
    """Layers the runtime forbids and the sandbox kept weaker (e.g. ``hostname``): why."""
    attempts: tuple[Attempt, ...] = ()
    """What the build tried that the sandbox recorded (DNS names, decoys opened)."""
    attempts_omitted: dict[str, int] = dataclasses.field(default_factory=dict)
    """Attempts of each kind past the recording's cap, or dropped by the kernel: counted
    only (``{"dns": 12}``)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dictionary."""
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        data["attempts"] = to_json(self.attempts)
        return data

    @property
    def attempts_summary(self) -> str:
        """One line, ``tried: DNS pypi.org; read decoy ~/.netrc``; empty when none."""
        return summary(self.attempts, self.attempts_omitted)
