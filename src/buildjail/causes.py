"""Why a hook probably failed, from what buildjail itself knows: what the sandbox denied.

Two causes are named: a directory of the caller's ``PATH`` that the view hides (a
toolchain in ``~/.cargo/bin``, ``/opt``), and the network, when the hook's output shows
it tried to reach it under a policy that gives it none. The output is hostile: only its
bounded tail is read, and only searched for fixed strings; nothing of it is repeated.
"""

from __future__ import annotations

import os

from .explain import hidden_path_entries, plan_view
from .policy import Policy

MAX_TAIL = 64 << 10
"""The most of a hook's output tail searched (its end, where the error is)."""
NETWORK_SIGNS = (
    "network is unreachable", "temporary failure in name resolution",
    "name or service not known", "no address associated with hostname",
    "could not resolve host", "failed to lookup address information",
    "nodename nor servname", "getaddrinfo failed", "[errno 101]", "[errno -3]",
    "connecterror", "connectionerror", "failed to establish a new connection",
    "no route to host",
)
"""What resolvers, sockets and HTTP clients (Python's, curl, cargo, httpx) print when the
network is absent (compared lower-case)."""


def likely_causes(policy: Policy, path: str, tail: str) -> list[str]:
    """The causes, with the flag that removes each, for a hook of *policy* that failed.

    *path* is the ``PATH`` the caller passed to the build, *tail* the end of the hook's
    output.
    """
    causes = [f"PATH lists {entry}, hidden by the sandbox: --readonly {entry} to show it"
              for entry in hidden_directories(policy, path)]
    if "net" in policy.namespaces and tried_network(tail):
        causes.append(f"the build tried to reach the network, which the {policy.name} "
                      "profile denies: vendor its downloads or use --profile network")
    return causes


def hidden_directories(policy: Policy, path: str) -> list[str]:
    """The directories of *path* that exist on the host and *policy*'s view hides."""
    if not policy.filesystem:
        return []
    return hidden_path_entries(path, plan_view(policy, os.getcwd()))


def tried_network(tail: str) -> bool:
    """Whether a hook's output *tail* shows an attempt to reach the network."""
    text = tail[-MAX_TAIL:].lower()
    return any(sign in text for sign in NETWORK_SIGNS)
