"""The checkout a hook runs in: its VCS metadata is read-only, and no hook may add any.

A hook that could write a checkout's ``.git`` could set ``core.fsmonitor`` (or a hook, an
alias, a filter) that the user's next ``git status`` runs outside the sandbox, as the user.
The top-level metadata of every version control system is bound read-only inside the
writable source tree; metadata a hook creates anywhere in the tree (a ``.git`` that would
make git treat a subdirectory as a repository of its own) is removed and refused.
"""

from __future__ import annotations

import os

from . import trees

VCS_NAMES = (".git", ".hg", ".svn", ".bzr", "_darcs", ".jj")
"""The names under which version control systems keep a checkout's metadata."""


def vcs_metadata(tree: str) -> list[str]:
    """The VCS metadata at the top of *tree*: the paths to bind read-only for hooks."""
    return [os.path.join(tree, name) for name in VCS_NAMES
            if os.path.lexists(os.path.join(tree, name))]


def refuse_new_vcs_metadata(tree: str, existing: list[str]) -> list[str]:
    """Remove VCS metadata under *tree* that is not in *existing*; return what was removed.

    The walk does not enter existing metadata (it was read-only) nor other file systems.
    """
    known = frozenset(os.path.basename(path) for path in existing)
    removed = []
    for entry in trees.walk(tree, skip=VCS_NAMES):
        if entry.name not in VCS_NAMES or entry.parent is None:
            continue
        if entry.parent.parent is None and entry.name in known:
            continue  # the checkout's own (read-only) metadata
        failures = trees.remove_entry(entry)
        removed.append(entry.path + (f" (could not be removed: {failures[0]})"
                                     if failures else ""))
    return removed
