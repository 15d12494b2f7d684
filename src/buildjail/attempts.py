"""What a build tried: the attempts recorded in its sandbox, and their one-line summary.

An attempt is a small frozen record, a kind and its fields (``{"kind": "dns", "name":
"pypi.org"}``, ``{"kind": "credential", "path": "~/.netrc"}``). They are recorded by the
sandbox's trusted init from what the build did (see ``docs/architecture.md``); everything in
them came from the build, so each field is bounded and shown escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .escaping import one_line

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ._records import NamedTuple

MAX_ATTEMPTS = 1000
"""Distinct attempts recorded per run of one kind (``dns``); the rest are counted as omitted."""
CAPS = {"credential": 5}
"""Kinds with their own cap: a credential is one of the five decoys, so none is ever capped
away, however many DNS names came before it."""
MAX_FIELD = 1024
"""Characters kept of a field's value: a DNS name is at most 255 bytes on the wire, up to
~1000 characters escaped (``\\DDD``), so a name is always whole. A longer value loses its
middle, never its end, for a marker that names how much was cut and a checksum of it all."""
SUMMARY_LIMIT = 20
"""Attempts named in the one-line summary; the rest are ``and N more`` (the JSON has them)."""
FIRST = ("credential",)
"""Kinds the summary names first: a decoy read matters more than any DNS name."""
KINDS = ("credentials", "dns", "exec", "connect", "outlived")
"""What can be recorded, as named in the layers (``attempts:dns``)."""
HARMLESS = frozenset({"exec"})
"""Kinds that are no failure reason for ``on_attempt = "fail"`` (builds run compilers), named
as both the attempt's kind and its recording (``attempts:exec``). Every other kind is
*suspicious*: the network or a decoy — ``credential``, ``dns``, and any kind added later
unless it is added here (fail closed)."""
ON_ATTEMPT = ("warn", "fail")
"""What a build frontend does when a build tried something suspicious: say it (the
``tried:`` line), or fail the build."""


class Attempt(NamedTuple):
    """One thing the build tried: its kind and its fields, all short strings (an immutable
    record: a named tuple)."""

    kind: str
    fields: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, str]:
        """The attempt as JSON: ``{"kind": ..., **fields}``."""
        return {"kind": self.kind, **dict(self.fields)}

    def describe(self) -> str:
        """A few words for the summary: ``DNS pypi.org``, ``read decoy ~/.netrc`` (each
        value on one line, its control characters escaped: it came from the build)."""
        values = {key: one_line(value) for key, value in self.fields}
        if self.kind == "dns" and "name" in values:
            return f"DNS {values['name']}"
        if self.kind == "dns":
            return f"malformed DNS query ({values.get('bytes', '?')} bytes)"
        if self.kind == "credential":
            return f"read decoy {values.get('path', '?')}"
        if self.kind == "connect":
            address = values.get("address", "?")
            shown = f"[{address}]" if ":" in address else address
            return f"connect {values.get('protocol', '?')} {shown}:{values.get('port', '?')}"
        if self.kind == "exec":
            return f"ran {values.get('argv', '?')}"
        if self.kind == "outlived":
            return f"left running {values.get('argv', '?')}"
        return " ".join([self.kind, *values.values()])


def attempt(kind: str, **fields: str) -> Attempt:
    """An attempt of *kind*, its fields bounded to MAX_FIELD characters."""
    return Attempt(kind, tuple((key, bounded(value)) for key, value in fields.items()))


def bounded(value: str, limit: int = MAX_FIELD) -> str:
    """*value*, or past *limit* characters its start and its end around a marker: how many
    characters were cut and a checksum of the whole, so values differing in the cut differ."""
    if len(value) <= limit:
        return value
    import zlib  # only here: a value this long is rare

    marker = f"...[{{}} cut, crc32 {zlib.crc32(value.encode('utf-8', 'replace')):08x}]..."
    keep = limit - len(marker.format(len(value)))
    head, tail = keep // 2, keep - keep // 2
    return value[:head] + marker.format(len(value) - head - tail) + value[len(value) - tail:]


class AttemptLog:
    """Distinct attempts in the order seen, at most *limit* of each kind (CAPS where a kind
    has its own); the others counted per kind."""

    def __init__(self, limit: int = MAX_ATTEMPTS) -> None:
        self.limit = limit
        self.seen: dict[Attempt, None] = {}
        self.kept: dict[str, int] = {}
        self.omitted: dict[str, int] = {}

    def add(self, item: Attempt) -> None:
        """Record *item* once; past its kind's limit, count it as omitted."""
        if item in self.seen:
            return
        if self.kept.get(item.kind, 0) >= CAPS.get(item.kind, self.limit):
            self.lost(item.kind, 1)
            return
        self.kept[item.kind] = self.kept.get(item.kind, 0) + 1
        self.seen[item] = None

    def lost(self, kind: str, count: int) -> None:
        """Count *count* attempts of *kind* not recorded: past the cap, or dropped by the
        kernel before they could be read."""
        if count > 0:
            self.omitted[kind] = self.omitted.get(kind, 0) + count

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The recorded attempts, in order."""
        return tuple(self.seen)


def to_json(attempts: Iterable[Attempt]) -> list[dict[str, str]]:
    """The attempts as a JSON-ready list."""
    return [item.to_dict() for item in attempts]


def from_json(data: Any) -> tuple[Attempt, ...]:
    """Attempts read back from JSON; anything not a list of string mappings is dropped."""
    if not isinstance(data, list):
        return ()
    found = []
    for item in data:
        if isinstance(item, Mapping) and isinstance(item.get("kind"), str) and all(
                isinstance(value, str) for value in item.values()):
            fields = {key: value for key, value in item.items() if key != "kind"}
            found.append(attempt(item["kind"], **fields))
    return tuple(found)


def omitted_from_json(data: Any) -> dict[str, int]:
    """Omitted counts per kind read back from JSON; anything else is dropped."""
    if not isinstance(data, Mapping):
        return {}
    return {key: value for key, value in data.items()
            if isinstance(key, str) and isinstance(value, int) and value > 0}


def suspicious(attempts: Iterable[Attempt]) -> tuple[Attempt, ...]:
    """The attempts that reached for the network or a decoy: every kind not HARMLESS."""
    return tuple(item for item in attempts if item.kind not in HARMLESS)


def merged_omitted(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The omitted counts of several runs, added up per kind (each read as from JSON)."""
    total: dict[str, int] = {}
    for each in counts:
        for kind, count in omitted_from_json(each).items():
            total[kind] = total.get(kind, 0) + count
    return total


def refusal(attempts: Iterable[Attempt], omitted: Mapping[str, int] | None = None) -> str:
    """Why ``on_attempt = "fail"`` fails a run, in one line (empty when nothing suspicious):
    ``tried the network or a decoy: read decoy ~/.netrc; DNS pypi.org`` (``left a process
    running: ...`` where that is all it did).

    An omitted attempt of a suspicious kind counts: it was tried, only not named.
    """
    found = suspicious(attempts)
    more = {kind: count for kind, count in (omitted or {}).items() if kind not in HARMLESS}
    if not found and not any(more.values()):
        return ""
    kinds = {item.kind for item in found} | {kind for kind, count in more.items() if count}
    what = ("left a process running" if kinds == {"outlived"} else
            "tried the network or a decoy, or left a process running" if "outlived" in kinds
            else "tried the network or a decoy")
    return f"{what}: " + summary(found, more).removeprefix("tried: ")


def unrecorded(layers: Iterable[str], degraded: Mapping[str, str]) -> dict[str, str]:
    """The recordings ``on_attempt = "fail"`` needs that a run did not have, and why: every
    ``attempts:KIND`` of KINDS but the HARMLESS, missing from *layers* or in *degraded*
    (a recorder that stopped); ``{}`` when the run saw all it must."""
    shown = set(layers)
    return {f"attempts:{kind}": degraded.get(f"attempts:{kind}", "not recorded")
            for kind in KINDS if kind not in HARMLESS and (
                f"attempts:{kind}" not in shown or f"attempts:{kind}" in degraded)}


def summary(attempts: Iterable[Attempt], omitted: Mapping[str, int] | None = None,
            limit: int = SUMMARY_LIMIT) -> str:
    """One line: ``tried: read decoy ~/.netrc; DNS pypi.org`` (empty when nothing was).

    Credentials first; past *limit* attempts, and for every one *omitted*, ``and N more``:
    the line never drops one without saying so. The HARMLESS kinds (the programs a build
    ran: every compiler) are not named here; the JSON report has them.
    """
    found = sorted(dict.fromkeys(suspicious(attempts)), key=lambda item: item.kind not in FIRST)
    words = [item.describe() for item in found[:limit]]
    more = len(found) - len(words) + sum(count for kind, count in (omitted or {}).items()
                                         if kind not in HARMLESS)
    if more:
        words.append(f"and {more} more" if words else f"{more} not named (only counted)")
    return "tried: " + "; ".join(words) if words else ""
