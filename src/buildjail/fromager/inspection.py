"""``buildjail fromager --inspect``: every wheel fromager builds is inspected right after.

fromager calls its ``post_build`` hooks (``fromager build``) and its ``post_bootstrap``
hooks (``fromager bootstrap``, once a package is built) with the wheel it made; buildjail
declares both in the ``fromager.hooks`` entry-point group. They do nothing unless
``buildjail fromager --inspect`` turned them on (:func:`enable`) in fromager's own process,
so a plain ``fromager`` with buildjail installed is unchanged.

Each wheel is inspected as ``buildjail inspect`` does (:func:`buildjail.inspection.
inspect_wheels`), under the policy and backend of fromager's build steps, its dependencies
taken from fromager's wheel directories. A wheel that tried anything suspicious, or could
not be inspected whole, fails its package: the hook raises, naming what it tried.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any

from ..errors import BuildjailError
from ..inspection import inspect_wheels
from ..inspection.report import table_lines
from ..policy import Policy

logger = logging.getLogger(__name__)

_WHEEL_DIRECTORIES = ("wheels_downloads", "wheels_prebuilt", "wheels_build")
"""The directories of fromager's ``WorkContext`` a wheel's dependencies are taken from."""


class WheelRejectedError(BuildjailError):
    """A wheel fromager built tried something suspicious (or could not be inspected)."""


@dataclasses.dataclass
class _Settings:
    policy: Policy
    backend: str
    seen: set[str] = dataclasses.field(default_factory=set)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_enabled: list[_Settings] = []
"""The settings of ``--inspect`` while it is on (one at most)."""


def enable(policy: Policy, backend: str = "auto") -> None:
    """Inspect every wheel fromager builds from now on, in this process."""
    _enabled[:] = [_Settings(policy, backend)]


def disable() -> None:
    """Stop inspecting (the hooks do nothing again)."""
    _enabled.clear()


def post_build(*, ctx: Any, dist_name: str, dist_version: str, wheel_filename: Any = None,
               **_: Any) -> None:
    """fromager's ``post_build`` hook: inspect the wheel just built."""
    inspect_built(ctx, dist_name, dist_version, wheel_filename)


def post_bootstrap(*, ctx: Any, dist_name: str, dist_version: str,
                   wheel_filename: Any = None, **_: Any) -> None:
    """fromager's ``post_bootstrap`` hook: inspect the package's wheel (when it has one)."""
    inspect_built(ctx, dist_name, dist_version, wheel_filename)


def inspect_built(ctx: Any, name: str, version: str, wheel: Any) -> None:
    """Inspect *wheel* once, when enabled; raise WheelRejectedError unless it is clean."""
    settings = _enabled[0] if _enabled else None
    if settings is None or wheel is None:
        return
    path = os.path.abspath(os.fspath(wheel))
    with settings.lock:
        if path in settings.seen:
            return
        settings.seen.add(path)
    links = [os.fspath(directory) for directory in
             (getattr(ctx, attribute, None) for attribute in _WHEEL_DIRECTORIES)
             if directory is not None and os.path.isdir(directory)]
    [report] = inspect_wheels([path], policy=settings.policy, backend=settings.backend,
                              find_links=links)
    clean = report.verdict == "clean"
    for line in table_lines(report):
        (logger.info if clean else logger.error)("buildjail inspect: %s", line)
    if not clean:
        why = report.summary() or "; ".join([*report.incomplete, *report.unrecorded.values()])
        raise WheelRejectedError(f"{name} {version}: buildjail inspect found the wheel "
                                 f"{os.path.basename(path)} {report.verdict}: {why}")
