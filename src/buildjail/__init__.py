"""buildjail: run Python build backends (PEP 517 hooks) inside a Linux sandbox."""

from __future__ import annotations

from .errors import BuildjailError, PolicyError, SandboxSetupError
from .limits import Limits
from .policy import Policy
from .result import RunResult
from .sandbox import Sandbox

__all__ = [
    "BuildjailError",
    "Limits",
    "Policy",
    "PolicyError",
    "RunResult",
    "Sandbox",
    "SandboxSetupError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Import the PEP 517 names lazily: they need pyproject_hooks, the sandbox does not."""
    if name in ("hook_runner", "HookFailed", "SandboxedHookRunner"):
        from . import pep517

        return getattr(pep517, name)
    raise AttributeError(f"module 'buildjail' has no attribute {name!r}")
