"""Where fromager's sandboxing hooks take their policy and backend from: the environment.

fromager's settings refuse keys they do not know (``extra="forbid"``), so the hooks read
``BUILDJAIL_POLICY`` — a profile name (``full``, ``network``, ``none``) or the path of a
policy TOML file, the same file ``buildjail fromager --policy`` takes — and
``BUILDJAIL_BACKEND`` (``auto``, ``native``, ``bwrap``, ``landlock``). Unset: ``full``
on ``auto``'s choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..backends import BACKENDS
from ..errors import PolicyError
from ..policy import PROFILES, Policy

POLICY_VARIABLE = "BUILDJAIL_POLICY"
BACKEND_VARIABLE = "BUILDJAIL_BACKEND"
DEFAULT_POLICY = "full"
DEFAULT_BACKEND = "auto"


def configured_policy(environ: Mapping[str, str]) -> Policy:
    """The policy ``BUILDJAIL_POLICY`` names (default ``full``); PolicyError if it is bad."""
    value = environ.get(POLICY_VARIABLE, "").strip() or DEFAULT_POLICY
    if value in PROFILES:
        return Policy.profile(value)
    if not os.path.isabs(value):
        raise PolicyError(f"{POLICY_VARIABLE}={value!r} is neither a profile "
                          f"({', '.join(PROFILES)}) nor the absolute path of a policy file")
    return Policy.from_toml(value)


def configured_backend(environ: Mapping[str, str]) -> str:
    """The backend ``BUILDJAIL_BACKEND`` names (default ``auto``); PolicyError if unknown."""
    value = environ.get(BACKEND_VARIABLE, "").strip() or DEFAULT_BACKEND
    if value not in (DEFAULT_BACKEND, *BACKENDS):
        raise PolicyError(f"{BACKEND_VARIABLE}={value!r} is not a backend; choose "
                          f"{', '.join((DEFAULT_BACKEND, *BACKENDS))}")
    return value
