"""Backends enforce a policy for one command: which there are, and which ``auto`` picks.

The types they share (:class:`~.base.Request`, the launch plan) live in :mod:`.base`, the
protocol (:class:`~.protocol.Backend`) in :mod:`.protocol`; both names are re-exported here,
``Backend`` imported when it is first asked for.
"""

from __future__ import annotations

import functools

from .._linux.identity import Lease
from .base import Request

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from .protocol import Backend

__all__ = [
    "BACKENDS",
    "NATIVE_KERNEL",
    "SEARCHABLE",
    "Backend",
    "Lease",
    "Request",
    "choose_backend",
    "get_backend",
    "not_covered",
    "not_recorded",
    "shows_host_paths",
]

BACKENDS = ("native", "bwrap", "landlock")
"""The backends, in the order ``auto`` prefers them."""
NATIVE_KERNEL = (5, 12)
"""The first Linux with every mount call the native backend uses (``mount_setattr``)."""


def __getattr__(name: str) -> object:
    """``Backend``, imported on first use (with typing: a run has no use for either)."""
    if name != "Backend":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .protocol import Backend

    globals()[name] = Backend
    return Backend


def get_backend(name: str) -> Backend:
    """Return the backend called *name*: ``native``, ``bwrap``, ``landlock`` or ``auto``."""
    from ..errors import PolicyError

    if name == "auto":
        name = choose_backend()[0]
    if name == "native":
        from .native import NativeBackend

        return NativeBackend()
    if name == "bwrap":
        from .bwrap import BwrapBackend

        return BwrapBackend()
    if name == "landlock":
        from .landlock import LandlockBackend

        return LandlockBackend()
    raise PolicyError(f"unknown backend {name!r}; choose native, bwrap, landlock or auto")


def not_covered(name: str) -> dict[str, str]:
    """What backend *name* (or ``auto``'s choice) says it cannot give of ``full``, per
    layer: why (nothing for the namespace backends)."""
    if resolved(name) != "landlock":
        return {}
    from .landlock import NOT_COVERED

    return dict(NOT_COVERED)


def not_recorded(name: str) -> dict[str, str]:
    """The kinds of attempt backend *name* (or ``auto``'s choice) never records, as layers
    (``attempts:dns``): why (nothing for the namespace backends)."""
    if resolved(name) != "landlock":
        return {}
    from .landlock import NOT_RECORDED

    return dict(NOT_RECORDED)


def shows_host_paths(name: str) -> bool:
    """Whether backend *name* (or ``auto``'s choice) shows trees only where they are on the
    host, with no mount namespace to re-attach them (``landlock``): then the build's
    identity must be able to search every directory above them."""
    return resolved(name) == "landlock"


def resolved(name: str) -> str:
    """The backend *name* stands for: ``auto``'s choice here, or *name* itself."""
    return choose_backend()[0] if name == "auto" else name


SEARCHABLE = 0o711
"""The mode of a caller's private work directory that such a backend's build must pass
through: searchable, not listable (every name below it is random)."""


def choose_backend() -> tuple[str, str]:
    """The rule behind ``--backend auto``: the backend's name and why it was chosen.

    Where namespaces can be made: ``native`` when the kernel has every mount call it needs
    (Linux 5.12 or newer), since it needs no external tool; otherwise ``bwrap`` when
    bubblewrap 0.8 or newer is installed. Where they are refused (a default Docker
    container, a restricted user namespace): ``landlock`` when the kernel has Landlock.
    Otherwise ``native``, which then fails closed and says why.
    """
    refused = _namespaces_refused()
    if refused is not None:
        return _without_namespaces(refused)
    kernel = _kernel_version()
    if kernel >= NATIVE_KERNEL:
        return "native", f"Linux {_dotted(kernel)} has every mount call the native backend uses"
    from .bwrap import MINIMUM_VERSION, bwrap_version, find_bwrap

    executable = find_bwrap()
    version = bwrap_version(executable) if executable else None
    if version is not None and version >= MINIMUM_VERSION:
        return "bwrap", (f"Linux {_dotted(kernel)} is older than {_dotted(NATIVE_KERNEL)} "
                         f"and {executable} is bubblewrap {_dotted(version)}")
    return "native", (f"Linux {_dotted(kernel)} is older than {_dotted(NATIVE_KERNEL)} and no "
                      "bubblewrap 0.8+ is installed: the native backend will say what fails")


def _without_namespaces(refused: OSError) -> tuple[str, str]:
    from .._linux import landlock

    why = f"namespaces are refused here ({refused.strerror})"
    abi = landlock.abi_version()
    if abi:
        return "landlock", f"{why} and the kernel has Landlock ABI {abi}"
    return "native", (f"{why} and {landlock.unavailable_reason()}: the native backend will say "
                      "what fails")


@functools.cache
def _namespaces_refused() -> OSError | None:
    """Why namespaces are refused here, or None: tried in a child, unless this is the
    unconfined root of the host, which the kernel refuses none (read from /proc, no fork:
    the command pays this once per run). A wrong "None" could only make ``auto`` pick
    ``native``, whose set-up then fails closed and says why."""
    from .._linux.procfs import unconfined_host_root

    if unconfined_host_root():
        return None
    from .._linux.userns import namespaces_refused

    return namespaces_refused()


def _kernel_version() -> tuple[int, ...]:
    import os
    import re

    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
