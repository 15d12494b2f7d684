"""The sandbox's environment: an allow-list with delete patterns, like sudo's env_keep."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from fnmatch import translate

from .credentials import redact as redact_urls


def filter_environment(
    env: Mapping[str, str], keep: Iterable[str], delete: Iterable[str], *,
    redact: bool = False,
) -> dict[str, str]:
    """Keep the variables matching a keep pattern and no delete pattern (case-insensitive).

    With *redact*, credentials in URLs inside the kept values are replaced by ``***``
    (``PIP_FIND_LINKS=https://user:TOKEN@host`` passes as ``https://user:***@host``): names
    alone do not tell where a token hides.
    """
    kept, deleted = _matcher(tuple(keep)), _matcher(tuple(delete))
    chosen = {name: value for name, value in env.items() if kept(name) and not deleted(name)}
    if not redact:
        return chosen
    return {name: redact_urls(value) for name, value in chosen.items()}


@functools.cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Compile fnmatch patterns into one case-insensitive predicate."""
    if not patterns:
        return lambda name: False
    regex = re.compile("|".join(translate(pattern) for pattern in patterns), re.IGNORECASE)
    return lambda name: regex.match(name) is not None
