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


MATCHES_REMEMBERED = 4096
"""Names whose answer one predicate keeps: a process's variables come back run after run."""


@functools.cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Compile fnmatch patterns into one case-insensitive predicate, which remembers its
    answers (a library caller filters the same environment for every run: 0.24 ms a call
    here for 39 variables against the default patterns)."""
    return functools.lru_cache(maxsize=MATCHES_REMEMBERED)(_predicate(patterns))


def _predicate(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """The predicate of *patterns*.

    Patterns whose only wildcard is ``*``, all ASCII (every default one), match an ASCII
    name by their pieces, as the regex would: compiling the regex of the 85 default
    patterns costs every command about a millisecond. Anything else takes the regex."""
    if not patterns:
        return lambda name: False
    if not all(pattern.isascii() and not _GLOB_SPECIALS & set(pattern) for pattern in patterns):
        return _regex_matcher(patterns)
    pieces = [tuple(pattern.upper().split("*")) for pattern in patterns]
    regex = functools.cache(lambda: _regex_matcher(patterns))

    def matches(name: str) -> bool:
        if not name.isascii():
            return regex()(name)
        upper = name.upper()
        return any(_star_match(upper, parts) for parts in pieces)

    return matches


_GLOB_SPECIALS = frozenset("?[")


def _regex_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    regex = re.compile("|".join(translate(pattern) for pattern in patterns), re.IGNORECASE)
    return lambda name: regex.match(name) is not None


def _star_match(name: str, parts: tuple[str, ...]) -> bool:
    """Whether *name* matches the pattern ``"*".join(parts)`` (``*``: any run of characters)."""
    if len(parts) == 1:
        return name == parts[0]
    first, *middle, last = parts
    if len(name) < len(first) + len(last) or not (
            name.startswith(first) and name.endswith(last)):
        return False
    position, end = len(first), len(name) - len(last)
    for part in middle:  # leftmost first: what one piece leaves can only help the next
        found = name.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
