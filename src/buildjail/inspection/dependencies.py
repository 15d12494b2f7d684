"""The dependency wheels ``buildjail inspect --find-links DIR`` installs beside a wheel.

Not a resolver: for each ``Requires-Dist`` that applies to this interpreter (no extras),
and theirs in turn, the highest version in the directories that satisfies it and whose
tags this interpreter accepts. A requirement none satisfies is left out (its import then
fails, which the report shows). Every wheel taken is copied and checked like the wheel
itself; names and versions come from ``packaging``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from email.parser import HeaderParser

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..archives import ArchiveError, WheelInfo, read_wheel_member

Copy = Callable[[str, str], tuple[str, WheelInfo]]


def resolve(wheel: str, dist_info: str, find_links: list[str], *, directory: str,
            limit: int, copy: Copy) -> list[str]:
    """The checked copies (in *directory*, by *copy*) of *wheel*'s dependency wheels found
    in *find_links*, at most *limit*, dependencies first."""
    candidates = _candidates(find_links)
    taken: dict[str, str] = {}
    pending = _requirements(wheel, dist_info)
    seen = {canonicalize_name(_name_of(dist_info))}
    while pending and len(taken) < limit:
        requirement = pending.pop(0)
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        best = _best(candidates.get(name, []), requirement)
        if best is None:
            continue
        os.makedirs(os.path.join(directory, "deps"), mode=0o700, exist_ok=True)
        path, info = copy(best, os.path.join(directory, "deps"))
        taken[name] = path
        pending += _requirements(path, info.dist_info)
    return list(reversed(taken.values()))


def _candidates(find_links: list[str]) -> dict[str, list[tuple[Version, str]]]:
    """Every wheel of *find_links* this interpreter can install: name -> (version, path)."""
    accepted = set(sys_tags())
    found: dict[str, list[tuple[Version, str]]] = {}
    for directory in find_links:
        for entry in sorted(os.listdir(directory)):
            if not entry.endswith(".whl"):
                continue
            try:
                name, version, _, tags = parse_wheel_filename(entry)
            except (InvalidWheelFilename, ValueError):
                continue
            if tags & accepted:
                found.setdefault(name, []).append((version, os.path.join(directory, entry)))
    return found


def _best(candidates: list[tuple[Version, str]], requirement: Requirement) -> str | None:
    fitting = [(version, path) for version, path in candidates
               if requirement.specifier.contains(version, prereleases=True)]
    return max(fitting)[1] if fitting else None


def _requirements(wheel: str, dist_info: str) -> list[Requirement]:
    """The ``Requires-Dist`` of a checked wheel that apply here (unparsable ones skipped)."""
    try:
        data = read_wheel_member(wheel, f"{dist_info}/METADATA")
    except ArchiveError:
        return []
    headers = HeaderParser().parsestr((data or b"").decode("utf-8", "replace"))
    found = []
    for text in headers.get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(str(text))
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(requirement)
    return found


def _name_of(dist_info: str) -> str:
    return dist_info.removesuffix(".dist-info").rpartition("-")[0]

