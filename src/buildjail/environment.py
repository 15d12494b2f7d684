"""The sandbox's environment: an allow-list with delete patterns, like sudo's env_keep."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from fnmatch import translate


def filter_environment(
    env: Mapping[str, str], keep: Iterable[str], delete: Iterable[str]
) -> dict[str, str]:
    """Keep the variables matching a keep pattern and no delete pattern (case-insensitive)."""
    kept, deleted = _matcher(tuple(keep)), _matcher(tuple(delete))
    return {name: value for name, value in env.items() if kept(name) and not deleted(name)}


@functools.cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Compile fnmatch patterns into one case-insensitive predicate."""
    if not patterns:
        return lambda name: False
    regex = re.compile("|".join(translate(pattern) for pattern in patterns), re.IGNORECASE)
    return lambda name: regex.match(name) is not None
