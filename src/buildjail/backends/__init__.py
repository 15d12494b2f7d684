"""Backends enforce a policy for one command; each says what it can enforce on this host."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ..policy import Policy
from ..result import RunResult


@dataclasses.dataclass(frozen=True)
class Request:
    """One command to run under a policy, with its environment already filtered."""

    policy: Policy
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


class Backend(Protocol):
    """Something that runs a :class:`Request` and returns a :class:`RunResult`."""

    name: str

    def run(self, request: Request) -> RunResult:
        """Run the command; raise SandboxSetupError when a layer cannot be enforced."""


def get_backend(name: str) -> Backend:
    """Return the backend called *name* (``native`` or ``auto``)."""
    from ..errors import PolicyError

    if name in ("native", "auto"):
        from .native import NativeBackend

        return NativeBackend()
    raise PolicyError(f"unknown backend {name!r}; choose native or auto")
