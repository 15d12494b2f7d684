"""Where fromager's sandboxing hooks take their policy and backend from: the environment.

fromager's settings refuse keys they do not know (``extra="forbid"``), so the hooks read
``BUILDJAIL_POLICY`` — a profile name (``full``, ``network``, ``none``) or the path of a
policy TOML file, the same file ``buildjail fromager --policy`` takes — and
``BUILDJAIL_BACKEND`` (``auto``, ``native``, ``bwrap``, ``landlock``), and
``BUILDJAIL_ON_ATTEMPT`` (``warn``, ``fail``: over the policy's ``on_attempt``). Unset:
``full`` on ``auto``'s choice, warning of what a step tried.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..attempts import ON_ATTEMPT
from ..backends import BACKENDS
from ..errors import PolicyError
from ..policy import PROFILES, Policy

POLICY_VARIABLE = "BUILDJAIL_POLICY"
ON_ATTEMPT_VARIABLE = "BUILDJAIL_ON_ATTEMPT"
BACKEND_VARIABLE = "BUILDJAIL_BACKEND"
DEFAULT_POLICY = "full"
DEFAULT_BACKEND = "auto"


def configured_policy(environ: Mapping[str, str]) -> Policy:
    """The policy ``BUILDJAIL_POLICY`` names (default ``full``), with the ``on_attempt`` of
    ``BUILDJAIL_ON_ATTEMPT`` when set; PolicyError if either is bad."""
    value = environ.get(POLICY_VARIABLE, "").strip() or DEFAULT_POLICY
    if value in PROFILES:
        policy = Policy.profile(value)
    elif not os.path.isabs(value):
        raise PolicyError(f"{POLICY_VARIABLE}={value!r} is neither a profile "
                          f"({', '.join(PROFILES)}) nor the absolute path of a policy file")
    else:
        policy = Policy.from_toml(value)
    return policy.with_on_attempt(configured_on_attempt(environ))


def configured_on_attempt(environ: Mapping[str, str]) -> str | None:
    """What ``BUILDJAIL_ON_ATTEMPT`` says (None when unset); PolicyError unless warn or fail."""
    value = environ.get(ON_ATTEMPT_VARIABLE, "").strip()
    if value and value not in ON_ATTEMPT:
        raise PolicyError(f"{ON_ATTEMPT_VARIABLE}={value!r} is not "
                          f"{' or '.join(ON_ATTEMPT)}")
    return value or None


def configured_backend(environ: Mapping[str, str]) -> str:
    """The backend ``BUILDJAIL_BACKEND`` names (default ``auto``); PolicyError if unknown."""
    value = environ.get(BACKEND_VARIABLE, "").strip() or DEFAULT_BACKEND
    if value not in (DEFAULT_BACKEND, *BACKENDS):
        raise PolicyError(f"{BACKEND_VARIABLE}={value!r} is not a backend; choose "
                          f"{', '.join((DEFAULT_BACKEND, *BACKENDS))}")
    return value
