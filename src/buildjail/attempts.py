"""What a build tried: the attempts recorded in its sandbox, and their one-line summary.

An attempt is a small frozen record, a kind and its fields (``{"kind": "dns", "name":
"pypi.org"}``, ``{"kind": "credential", "path": "~/.netrc"}``). They are recorded by the
sandbox's trusted init from what the build did (see ``docs/architecture.md``); everything in
them came from the build, so each field is bounded and shown escaped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

MAX_ATTEMPTS = 1000
"""Distinct attempts recorded per run; the rest are counted as omitted."""
MAX_FIELD = 256
"""Characters kept of a field's value (a DNS name is at most 253)."""
KINDS = ("credentials", "dns")
"""What can be recorded, as named in the layers (``attempts:dns``)."""


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One thing the build tried: its kind and its fields, all short strings."""

    kind: str
    fields: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, str]:
        """The attempt as JSON: ``{"kind": ..., **fields}``."""
        return {"kind": self.kind, **dict(self.fields)}

    def describe(self) -> str:
        """A few words for the summary: ``DNS pypi.org``, ``read decoy ~/.netrc``."""
        values = dict(self.fields)
        if self.kind == "dns" and "name" in values:
            return f"DNS {values['name']}"
        if self.kind == "dns":
            return f"malformed DNS query ({values.get('bytes', '?')} bytes)"
        if self.kind == "credential":
            return f"read decoy {values.get('path', '?')}"
        return " ".join([self.kind, *values.values()])


def attempt(kind: str, **fields: str) -> Attempt:
    """An attempt of *kind*, its fields bounded to MAX_FIELD characters."""
    return Attempt(kind, tuple((key, value[:MAX_FIELD]) for key, value in fields.items()))


class AttemptLog:
    """Distinct attempts in the order seen, at most *limit*; the others counted."""

    def __init__(self, limit: int = MAX_ATTEMPTS) -> None:
        self.limit = limit
        self.seen: dict[Attempt, None] = {}
        self.omitted = 0

    def add(self, item: Attempt) -> None:
        """Record *item* once; past the limit, count it as omitted."""
        if item in self.seen:
            return
        if len(self.seen) >= self.limit:
            self.omitted += 1
            return
        self.seen[item] = None

    def lost(self, count: int) -> None:
        """Count *count* attempts the kernel dropped before they could be read."""
        self.omitted += max(0, count)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The recorded attempts, in order."""
        return tuple(self.seen)


def to_json(attempts: Iterable[Attempt]) -> list[dict[str, str]]:
    """The attempts as a JSON-ready list."""
    return [item.to_dict() for item in attempts]


def from_json(data: Any, limit: int = MAX_ATTEMPTS) -> tuple[Attempt, ...]:
    """Attempts read back from JSON; anything not a list of string mappings is dropped."""
    if not isinstance(data, list):
        return ()
    found = []
    for item in data[:limit]:
        if isinstance(item, Mapping) and isinstance(item.get("kind"), str) and all(
                isinstance(value, str) for value in item.values()):
            fields = {key: value for key, value in item.items() if key != "kind"}
            found.append(attempt(item["kind"], **fields))
    return tuple(found)


def summary(attempts: Iterable[Attempt], omitted: int = 0) -> str:
    """One line: ``tried: DNS pypi.org; read decoy ~/.netrc`` (empty when nothing was)."""
    words = [item.describe() for item in attempts]
    if omitted:
        words.append(f"{omitted} more")
    return "tried: " + "; ".join(words) if words else ""
