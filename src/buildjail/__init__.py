"""buildjail: run Python build backends (PEP 517 hooks) inside a Linux sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import BuildjailError, PolicyError, SandboxSetupError
from .limits import Limits
from .policy import Policy
from .result import RunResult
from .sandbox import Sandbox

if TYPE_CHECKING:  # imported lazily at run time, by __getattr__
    from .pep517 import HookFailed as HookFailed
    from .pep517 import SandboxedHookRunner as SandboxedHookRunner
    from .pep517 import hook_runner as hook_runner

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

_PEP517_NAMES = frozenset({"hook_runner", "HookFailed", "SandboxedHookRunner"})


def __getattr__(name: str) -> object:
    """Import the PEP 517 names lazily: they need pyproject_hooks, the sandbox does not."""
    if name in _PEP517_NAMES:
        from . import pep517

        return getattr(pep517, name)
    raise AttributeError(f"module 'buildjail' has no attribute {name!r}")
