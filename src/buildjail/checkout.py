"""The checkout a hook runs in: its VCS metadata is read-only, and no hook may add any.

A hook that could write a checkout's ``.git`` could set ``core.fsmonitor`` (or a hook, an
alias, a filter) that the user's next ``git status`` runs outside the sandbox, as the user.
The metadata of every version control system found in the source tree before a hook (the
checkout's own, a submodule's ``.git`` file, a vendored repository) is bound read-only
inside the writable tree; metadata a hook creates anywhere in the tree (a ``.git`` that
would make git treat a directory as a repository of its own) is removed and refused.
"""

from __future__ import annotations

from . import trees

VCS_NAMES = (".git", ".hg", ".svn", ".bzr", "_darcs", ".jj")
"""The names under which version control systems keep a checkout's metadata."""


MAX_BOUND_PATH = 4000
"""Metadata deeper than this many characters cannot be bound (it is refused instead)."""


def vcs_metadata(tree: str) -> list[str]:
    """The VCS metadata anywhere in *tree*: the paths to bind read-only for hooks.

    The walk enters neither the metadata itself nor other file systems.
    """
    return [entry.full_path for entry in trees.walk(tree, skip=VCS_NAMES)
            if entry.name in VCS_NAMES and entry.parent is not None]


def refuse_new_vcs_metadata(tree: str, existing: list[str]) -> list[str]:
    """Remove VCS metadata under *tree* that is not in *existing*; return what was removed."""
    known = frozenset(path for path in existing if len(path) < MAX_BOUND_PATH)
    removed = []
    for entry in trees.walk(tree, skip=VCS_NAMES):
        if entry.name not in VCS_NAMES or entry.parent is None:
            continue
        if entry.full_path in known:
            continue  # there before the hook, and read-only to it
        failures = trees.remove_entry(entry)
        removed.append(entry.path + (f" (could not be removed: {failures[0]})"
                                     if failures else ""))
    return removed
