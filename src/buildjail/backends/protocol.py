"""The backend protocol: what :class:`~buildjail.Sandbox` runs a request with.

A module of its own, imported only by what asks for :class:`Backend` (``buildjail.backends``
lazily): a :class:`typing.Protocol` needs typing, which ``buildjail run`` has no use for.
"""

from __future__ import annotations

from typing import Protocol

from ..result import RunResult
from .base import Request


class Backend(Protocol):
    """Something that runs a :class:`Request` and returns a :class:`RunResult`."""

    name: str

    def run(self, request: Request) -> RunResult:
        """Run the command; raise SandboxSetupError when a layer cannot be enforced."""
