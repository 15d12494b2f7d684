"""buildjail: run Python build backends (PEP 517 hooks) inside a Linux sandbox."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:  # imported lazily at run time, by __getattr__
    from .errors import BuildjailError as BuildjailError
    from .errors import PolicyError as PolicyError
    from .errors import SandboxSetupError as SandboxSetupError
    from .limits import Limits as Limits
    from .pep517 import HookFailed as HookFailed
    from .pep517 import SandboxedHookRunner as SandboxedHookRunner
    from .pep517 import hook_runner as hook_runner
    from .policy import Policy as Policy
    from .result import RunResult as RunResult
    from .sandbox import Sandbox as Sandbox

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

_MODULES = {
    "BuildjailError": "errors", "PolicyError": "errors", "SandboxSetupError": "errors",
    "Limits": "limits", "Policy": "policy", "RunResult": "result", "Sandbox": "sandbox",
    "hook_runner": "pep517", "HookFailed": "pep517", "SandboxedHookRunner": "pep517",
}
"""Where each public name lives. Nothing is imported before it is asked for: ``import
buildjail.cli`` (``--help``, ``--version``) or a frontend module costs only what it uses, and
the PEP 517 names need pyproject_hooks, which the sandbox does not."""


def __getattr__(name: str) -> object:
    """Import the module of public name *name* on first use; keep the name here."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'buildjail' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_MODULES})
