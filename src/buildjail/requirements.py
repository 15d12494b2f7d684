"""Build requirements, from ``pyproject.toml`` or a hook: hostile input, parsed before use.

Every requirement must be a PEP 508 requirement naming a project on the index: a URL
(``x @ file:///...``), a path, an installer option (``--index-url=...``, ``--log=...``)
or anything :class:`packaging.requirements.Requirement` cannot parse is refused before any
installer runs, with a message naming where the requirement came from (the caller adds the
package).
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement

from .errors import BuildjailError

MAX_REQUIREMENTS = 1000
"""The most build requirements one source of them may list."""
MAX_LENGTH = 1000
"""The longest requirement accepted (a PEP 508 string is rarely longer than 100)."""


class RequirementRefused(BuildjailError):  # noqa: N818 - says what happened
    """A build requirement that is not a plain PEP 508 requirement on a project name."""


def parse_requirements(values: object, origin: str) -> list[Requirement]:
    """Parse *values* (what *origin* gave, e.g. a hook) into requirements, or refuse them.

    Requirements whose markers do not apply to this interpreter are dropped.
    """
    if not isinstance(values, list | tuple):
        raise RequirementRefused(f"{origin} gave {_shown(values)} instead of a list of "
                                 "requirements")
    if len(values) > MAX_REQUIREMENTS:
        raise RequirementRefused(f"{origin} gave {len(values)} requirements (at most "
                                 f"{MAX_REQUIREMENTS})")
    parsed = []
    for value in values:
        requirement = parse_requirement(value, origin)
        if requirement.marker is None or requirement.marker.evaluate():
            parsed.append(requirement)
    return parsed


def parse_requirement(value: object, origin: str) -> Requirement:
    """One requirement on a project name, from *origin*; or RequirementRefused."""
    where = f"{origin} asked for {_shown(value)}"
    if not isinstance(value, str):
        raise RequirementRefused(f"{where}, which is not a string")
    text = value.strip()
    if len(text) > MAX_LENGTH:
        raise RequirementRefused(f"{where}, longer than {MAX_LENGTH} characters")
    if text.startswith("-"):
        raise RequirementRefused(f"{where}: an installer option, not a requirement (refused)")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise RequirementRefused(f"{where}, which is not a PEP 508 requirement: "
                                 f"{str(error).splitlines()[0]}") from None
    if requirement.url is not None:
        raise RequirementRefused(f"{where}: a direct reference to {requirement.url!r}; build "
                                 "requirements must name a project on the index (refused)")
    return requirement


def as_arguments(requirements: Iterable[Requirement]) -> list[str]:
    """The requirements as installer arguments (normalised text, sorted, each once)."""
    return sorted({str(requirement) for requirement in requirements})


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
