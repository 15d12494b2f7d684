"""The native backend: enforces a policy with the kernel's own interfaces, no external tools."""

from __future__ import annotations

from ..result import RunResult
from . import Request
from ._supervisor import run_supervised


class NativeBackend:
    """Enforce policies with namespaces, mounts, uid switching, prctl and seccomp."""

    name = "native"

    def run(self, request: Request) -> RunResult:
        """Run the command in the sandbox; raise SandboxSetupError if it cannot be set up."""
        return run_supervised(request, self.name)
