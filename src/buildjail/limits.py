"""Resource limits of a sandbox and the parsing of their human forms."""

from __future__ import annotations

import re

from ._records import Checked
from .errors import PolicyError

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from ._records import NamedTuple

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$"
"""Compiled on first use (re's cache), not at import: most runs parse no size."""


class _LimitFields(NamedTuple):
    wall_time: float | None = None
    """Seconds of wall time."""
    memory: int | None = None
    """Bytes of memory, everything the build holds: anonymous, shared, tmpfs, IPC, sockets."""
    processes: int | None = None
    file_size: int | None = None
    """Bytes of one file (RLIMIT_FSIZE)."""
    open_files: int | None = None
    """Descriptors of one process (RLIMIT_NOFILE)."""
    cpu_time: float | None = None
    """Seconds of CPU time of all the sandbox's processes together."""
    disk: int | None = None
    """Bytes the build may add to its writable trees (default: ¾ of their free space)."""
    disk_inodes: int | None = None
    """Files and directories the build may add to its writable trees (default: ¾ of free)."""


class Limits(Checked, _LimitFields):
    """Resource limits of one sandboxed command; None means no limit of that kind.

    An immutable record (a named tuple: start-up time, issue 15), checked when made,
    copied with changes by ``_replace`` (checked too).
    """

    __slots__ = ()

    def _check(self) -> None:
        for name, value in zip(self._fields, self, strict=True):
            if value is not None and value <= 0:
                raise PolicyError(f"limit {name} must be positive, got {value!r}")


def parse_size(text: str | int) -> int:
    """Parse a size such as ``512M``, ``2GiB`` or ``1048576`` into bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.match(_SIZE, str(text), re.IGNORECASE)
    if not match:
        raise PolicyError(f"not a size: {text!r} (use e.g. 512M, 2G, 1048576)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration(text: str | float) -> float:
    """Parse a duration in seconds, with an optional ``s``, ``m`` or ``h`` suffix."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$", str(text))
    if not match:
        raise PolicyError(f"not a duration: {text!r} (use e.g. 90, 90s, 15m, 2h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def describe_limit(name: str) -> str:
    """The words for the limit *name* (a ``RunResult.limit_hit``): ``the wall time limit``."""
    return f"the {name.replace('_', ' ')} limit"
