"""The sandbox's environment: an allow-list with delete patterns, like sudo's env_keep."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase


def filter_environment(
    env: Mapping[str, str], keep: Iterable[str], delete: Iterable[str]
) -> dict[str, str]:
    """Keep the variables matching a keep pattern and no delete pattern."""
    keep, delete = tuple(keep), tuple(delete)
    return {
        name: value
        for name, value in env.items()
        if _matches(name, keep) and not _matches(name, delete)
    }


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    upper = name.upper()
    return any(fnmatchcase(upper, pattern.upper()) for pattern in patterns)
