"""The environment of a command fromager runs outside the sandbox (``run_unconfined``).

fromager 0.92.0 and later filter the environment of its commands with its global
settings' ``external_commands: keep_env / delete_env`` (``ExternalCommands.filter_env``):
what is inherited from fromager's own environment is filtered, what fromager added (its
per-package variables) is applied after the filter, never filtered. A fromager without
those settings gets buildjail's policy's delete patterns (tokens, passwords) instead, the
rest passed through, as fromager passes it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..environment import filter_environment
from ..policy import Policy
from .api import EnvironmentFilter


def settings_filter(ctx: object) -> EnvironmentFilter | None:
    """fromager's ``ctx.settings.external_commands``, if this fromager has it."""
    found = getattr(getattr(ctx, "settings", None), "external_commands", None)
    return found if callable(getattr(found, "filter_env", None)) else None


def unconfined_environment(ctx: object, env: Mapping[str, str], inherited_from: Mapping[str, str],
                           policy: Policy) -> dict[str, str]:
    """*env* filtered: its variables *inherited_from* fromager's environment by fromager's
    settings (or *policy*'s delete patterns), the ones fromager added kept."""
    inherited = {name: value for name, value in env.items()
                 if inherited_from.get(name) == value}
    added = {name: value for name, value in env.items() if name not in inherited}
    found = settings_filter(ctx)
    if found is not None:
        kept = dict(found.filter_env(inherited))
    else:
        kept = filter_environment(inherited, ("*",), policy.env_delete)
    return {**kept, **added}
