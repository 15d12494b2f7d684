"""What a sandbox will show and give a command, in words: ``buildjail run --explain``.

Computed from the policy and the host exactly as a run plans it, without running anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ._linux.filesystem import PRIVATE_TMPFS, MountPlan, interpreter_paths, plan_mounts, within_any
from ._linux.identity import Identity
from .backends import not_covered
from .environment import filter_environment
from .policy import Policy


def hidden_path_entries(path: str, plan: MountPlan) -> list[str]:
    """The directories of a ``PATH`` that exist on the host but are not in the view."""
    shown = (*plan.exposed, *PRIVATE_TMPFS, plan.identity.home, "/dev", "/proc")
    hidden = []
    for entry in path.split(os.pathsep):
        if entry.startswith("/") and os.path.isdir(entry) and not within_any(
                os.path.normpath(entry), shown) and not _linked_into_view(entry, plan):
            hidden.append(entry)
    return list(dict.fromkeys(hidden))


def _linked_into_view(entry: str, plan: MountPlan) -> bool:
    """Whether *entry* is one of the view's own links (``/bin`` -> ``usr/bin``)."""
    return any(entry.rstrip("/") == link for link, _ in plan.links)


def hidden_tools_hint(path: str, plan: MountPlan) -> str:
    """A hint naming the flag, when the command's PATH has directories the view hides."""
    hidden = hidden_path_entries(path, plan)
    if not hidden:
        return ""
    flags = " ".join(f"--readonly {entry}" for entry in hidden)
    return (f"the sandbox does not show these PATH directories: {', '.join(hidden)}; if the "
            f"command needs a tool from one (cargo in ~/.cargo/bin, a toolchain in /opt), "
            f"add it with {flags} (and what it uses, e.g. ~/.rustup)")


def failure_hint(policy: Policy, path: str) -> str:
    """The hint for a command that failed in *policy*'s view with *path* as its PATH."""
    if not policy.filesystem:
        return ""
    return hidden_tools_hint(path, plan_view(policy, os.getcwd()))


def plan_view(policy: Policy, cwd: str) -> MountPlan:
    """The view a run of *policy* would build here (identity shown as the caller's)."""
    return plan_mounts(readonly=(*interpreter_paths(), *policy.readonly),
                       writable=policy.writable,
                       masked=policy.masked, identity=Identity(os.getuid(), os.getgid()),
                       tmpfs_size=policy.limits.memory)


def explain(policy: Policy, cmd: Sequence[str], cwd: str, env: Mapping[str, str],
            backend: str) -> str:
    """The policy, the view, the environment and the limits a run of *cmd* would get."""
    lines = [f"policy: {policy.name}", f"backend: {backend}",
             f"command: {' '.join(cmd)} (in {cwd})"]
    if policy.filesystem:
        lines += _view_lines(plan_view(policy, cwd))
        lines += [f"  not given by the {backend} backend: {layer}: {why}"
                  for layer, why in not_covered(backend).items()]
    else:
        lines.append("view: the host's whole file system (this policy has no filesystem view)")
    kept = filter_environment(env, policy.env_keep, policy.env_delete)
    dropped = sorted(set(env) - set(kept))
    lines.append(f"environment kept: {', '.join(sorted(kept)) or '(none)'}")
    lines.append(f"environment dropped: {', '.join(dropped) or '(none)'}")
    limits = {name: value for name, value in policy.limits._asdict().items() if value is not None}
    lines.append("limits: " + (", ".join(f"{name}={value}" for name, value in limits.items())
                               or "none"))
    if policy.filesystem:
        hint = hidden_tools_hint(env.get("PATH", ""), plan_view(policy, cwd))
        if hint:
            lines.append(f"note: {hint}")
    return "\n".join(lines)


def _view_lines(plan: MountPlan) -> list[str]:
    system = [path for path in plan.system if not path.startswith("/etc/")]
    own = ("/etc/passwd", "/etc/group", "/etc/hosts", "/etc/mtab")
    etc = sorted({path.removeprefix("/etc/") for path in (
        *plan.system, *(entry.path for entry in plan.entries))
        if path.count("/") == 2 and path.startswith("/etc/") and path not in own})
    links = [f"{path} -> {target}" for path, target in plan.links]
    shown = (*plan.exposed, *PRIVATE_TMPFS, "/dev", "/proc", plan.identity.home,
             *(link for link, _ in plan.links))
    absent = sorted(f"/{name}" for name in _top_level() if not any(
        within_any(path, (f"/{name}",)) or within_any(f"/{name}", (path,)) for path in shown))
    return [
        "view (everything not listed is absent):",
        f"  read-only, the system's: {', '.join(system)}",
        f"  read-only, /etc: {', '.join(etc)}; passwd, group and hosts are the sandbox's own",
        f"  links: {', '.join(links)}",
        f"  read-only, declared: {', '.join(plan.readonly) or '(none)'}",
        f"  writable: {', '.join(plan.writable) or '(none)'}",
        f"  private tmpfs: {', '.join((*PRIVATE_TMPFS, '/dev/shm', plan.identity.home))}; "
        "a minimal /dev; the sandbox's own /proc",
        f"  masked inside those: {', '.join(plan.masks()) or '(none)'}",
        f"  absent, among others: {', '.join(absent)}",
    ]


def _top_level() -> list[str]:
    try:
        return sorted(os.listdir("/"))
    except OSError:
        return []
