"""The landlock backend: the same policy where the host refuses namespaces.

Docker's and containerd's default seccomp profiles deny ``unshare`` without CAP_SYS_ADMIN,
Ubuntu restricts unprivileged user namespaces; Landlock needs neither namespaces nor
privilege. The shared supervisor still leases the identity (root), lends and hands back the
writable trees, enforces the wall time and the disk budget and reports. The init makes no
namespace: it becomes a child subreaper, confines itself — identity, capabilities,
``no_new_privs``, a Landlock ruleset built from the view ``full`` shows, seccomp standing in
for the network and IPC namespaces — and spawns the command; when the command ends it kills
whatever the command left.

What this backend cannot give is named in :attr:`~buildjail.result.RunResult.degraded`
(:data:`NOT_COVERED`), never silent; a kernel whose Landlock is too old for a layer the
policy needs fails the run, naming the Linux release that would serve.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator

from .._linux import landlock, seccomp
from .._linux.filesystem import (
    DEVICES,
    MountPlan,
    interpreter_paths,
    untraversable_ancestors,
    within_any,
)
from ..errors import SandboxSetupError
from ..result import RunResult
from ..trees import remove_tree
from ._supervisor import run_supervised
from .base import Command, Confinement, Launch, Request, SandboxPlan, SetUp

FILESYSTEM_ABI = 3
"""Truncation (ABI 3) must be handled, or a build could empty any file its uid may write."""
NON_ROOT_ABI = landlock.SCOPE_ABI
"""As non-root the build runs as the caller's uid: only scoped signals (ABI 6) keep it from
signalling the caller's other processes and from reaching their abstract unix sockets."""
SCRATCH_BASE = "/tmp"
"""Where each run's private home and temporary directory are made (and removed after)."""
_ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/hosts")

HIDDEN_CONFIG_ENV = {"GIT_CONFIG_NOSYSTEM": "1"}
"""Set for the build: the host's configuration the view hides is not even looked for."""

NOT_COVERED = {
    "processes": "other processes' command lines stay visible in /proc (their environment, "
                 "memory and descriptors do not: Landlock scopes ptrace to the sandbox), and "
                 "so does the host's network state in /proc/net",
    "loopback": "no private loopback: every socket but a unix socket pair is refused, and "
                "connect and bind with it",
    "shared memory": "no private /dev/shm or System V IPC: both are refused",
    "tmp": "/tmp is the host's: nothing in it can be read or written, but a name there can "
           "be tested for (Landlock does not cover stat); TMPDIR and HOME are private",
    "accounts": "the host's /etc/passwd, /etc/group and /etc/hosts are readable (the other "
                "backends show the build's own)",
}
"""What the ``full`` view has and this backend does not give, and what it does instead."""

NOT_COVERED_NON_ROOT = {
    "file metadata": "the build runs as your uid, and Landlock does not cover chmod, chown, "
                     "utime or extended attributes: it could change the modes and times of "
                     "your files outside its trees (not read or write them); run as root for "
                     "an ephemeral uid, or use another backend where namespaces are allowed",
    "monitor": "the build shares your uid and its init's domain: it can stop its init, "
               "which then stops counting processes and CPU time (RLIMIT_NPROC and the wall "
               "time still hold); memory and disk are watched from outside, but pipe "
               "buffers and unix sockets in flight are not counted",
}
"""What it does not give where the build runs as the caller's own uid (non-root)."""


class LandlockBackend:
    """Enforce policies with Landlock, seccomp, uid switching and prctl: no namespaces."""

    name = "landlock"

    def __init__(self, abi: int | None = None) -> None:
        """*abi* pins the ruleset to an older Landlock ABI than the kernel's (for tests)."""
        self.abi = abi

    def run(self, request: Request) -> RunResult:
        """Run the command under Landlock; raise SandboxSetupError when it cannot be set up."""
        abi = require_landlock(self.abi)
        if not request.policy.filesystem:
            return run_supervised(request, self.name,
                                  functools.partial(plan_landlock, abi=abi, scratch=None),
                                  namespaces=False)
        with _scratch() as scratch:
            policy = request.policy.with_paths(writable=[scratch])
            return run_supervised(request._replace(policy=policy), self.name,
                                  functools.partial(plan_landlock, abi=abi, scratch=scratch),
                                  namespaces=False)


def require_landlock(pinned: int | None = None) -> int:
    """The ABI version to write rulesets for; SandboxSetupError when Landlock is absent."""
    abi = landlock.abi_version()
    if abi == 0:
        raise SandboxSetupError(
            f"the landlock backend cannot run: {landlock.unavailable_reason()}",
            "boot a kernel with Landlock enabled (lsm=landlock,... on Linux 6.2 or newer), "
            "or use --backend native or bwrap where namespaces are allowed")
    return abi if pinned is None else min(pinned, abi)


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A fresh directory holding the run's private ``home`` and ``tmp``, removed after (by
    the supervisor, which outlives a killed caller; here again if the run never started)."""
    path = tempfile.mkdtemp(prefix="buildjail-landlock-", dir=SCRATCH_BASE)
    try:
        for name in ("home", "tmp"):
            os.mkdir(os.path.join(path, name), 0o700)
        yield path
    finally:
        remove_tree(path)


def plan_landlock(sandbox: SandboxPlan, *, abi: int, scratch: str | None) -> Launch:
    """The landlock launch: the init adopts, confines and spawns; it makes no namespace."""
    policy = sandbox.policy
    _refuse_too_old(sandbox, abi)
    ruleset = _ruleset(sandbox, abi, scratch)
    isolates = bool({"net", "ipc"} & policy.namespaces)
    confines = ruleset is not None or isolates or policy.seccomp
    program = _stand_in_program() if (policy.seccomp or isolates) else None
    return Launch(
        setup=SetUp(namespaces=0, subreaper=policy.kill_all,
                    record_leftovers=policy.record_attempts is True and policy.kill_all),
        confinement=Confinement(
            identity=sandbox.identity,
            switch_identity=sandbox.leased,
            drop_capabilities=policy.drop_capabilities or confines,
            no_new_privs=policy.no_new_privs or confines,
            seccomp_program=program,
            limits=policy.limits,
            landlock=ruleset,
            process_rlimit=sandbox.leased,
        ),
        command=_command(sandbox, scratch),
        layers=_layers(sandbox, abi, ruleset),
        degraded=_not_covered(sandbox, abi),
        scratch=(scratch,) if scratch is not None else (),
    )


@functools.cache
def _stand_in_program() -> bytes:
    return seccomp.build_filter(stand_in=True)


def _refuse_too_old(sandbox: SandboxPlan, abi: int) -> None:
    policy = sandbox.policy
    if policy.filesystem and abi < FILESYSTEM_ABI:
        raise _too_old(abi, FILESYSTEM_ABI, "to keep the build from truncating files outside "
                       "its writable trees (the filesystem view needs it)")
    if not sandbox.leased and (policy.filesystem or policy.kill_all) and abi < NON_ROOT_ABI:
        raise _too_old(abi, NON_ROOT_ABI, "to scope the build's signals and abstract unix "
                       "sockets to the sandbox: as non-root it runs as your own uid")


def _too_old(abi: int, needed: int, why: str) -> SandboxSetupError:
    return SandboxSetupError(
        f"the landlock backend needs Landlock ABI {needed} (Linux "
        f"{landlock.FIRST_KERNEL[needed]}) {why}; this kernel offers ABI {abi}",
        f"run on Linux {landlock.FIRST_KERNEL[needed]} or newer, or use --backend native or "
        "bwrap where namespaces are allowed")


def _ruleset(sandbox: SandboxPlan, abi: int,
             scratch: str | None) -> landlock.RulesetPlan | None:
    policy = sandbox.policy
    deny_tcp = "net" in policy.namespaces
    if sandbox.mounts is None:
        if deny_tcp and abi >= landlock.TCP_ABI:
            return landlock.RulesetPlan(abi=abi, filesystem=False, deny_tcp=True,
                                        scope=True)
        return None
    mounts = sandbox.mounts
    _refuse_read_only_inside_writable(mounts)
    if sandbox.leased:
        _refuse_unreachable(mounts, scratch)
        _refuse_unreachable_command(sandbox.request.argv[0])
    masks = frozenset(mounts.masks())
    # Rules are made on real paths: a link's own rule would be one on its target (the init
    # opens every rule path without following links, and skips a link it finds).
    shown = _real((*mounts.system, *mounts.readonly, *_own_entries(mounts)))
    read = [*_around_masks(shown, masks), "/proc"]
    return landlock.RulesetPlan(
        abi=abi,
        read=tuple(dict.fromkeys(read)),
        write=tuple(_around_masks(mounts.writable, masks)),
        devices=tuple(f"/dev/{name}" for name in DEVICES),
        reopen_stdio=True,
        deny_tcp=deny_tcp,
        scope=True,
    )


def _refuse_read_only_inside_writable(mounts: MountPlan) -> None:
    """Landlock's rights only add up: a tree inside a writable one cannot be read-only."""
    for path in mounts.readonly:
        tree = next((tree for tree in mounts.writable if within_any(path, (tree,))), None)
        if tree is not None:
            raise SandboxSetupError(
                f"the landlock backend cannot keep {path} read-only inside the writable "
                f"{tree}: Landlock can only add rights, and a mount namespace would be needed",
                f"leave {path} out of {tree} (build from an sdist or a copy), or use "
                "--backend native or bwrap where namespaces are allowed")


def _refuse_unreachable(mounts: MountPlan, scratch: str | None) -> None:
    """Declared trees the leased uid cannot reach: no mount namespace can re-attach them."""
    declared = tuple(path for path in (*mounts.readonly, *mounts.writable)
                     if path != scratch and path not in interpreter_paths())
    blocked = untraversable_ancestors(declared)
    if blocked:
        raise SandboxSetupError(
            f"{blocked[0]} is closed to other users (no search permission), so the build's "
            "ephemeral uid cannot reach what is declared below it, and the landlock "
            "backend has no mount namespace to re-attach it",
            f"move it out from under {blocked[0]}, or make {blocked[0]} searchable "
            "(chmod o+x), or use --backend native or bwrap where namespaces are allowed")


def _refuse_unreachable_command(command: str) -> None:
    """A command under a directory closed to others (a pyenv Python under /root) cannot be
    executed by the leased uid: say so before the run, with the way out."""
    if not os.path.isabs(command):
        return
    real = os.path.realpath(command)
    try:
        blocked = untraversable_ancestors((real,))
    except OSError:  # not there: the init's execute says so, as on the other backends
        return
    if blocked:
        shown = command if real == command else f"{command} (that is, {real})"
        raise SandboxSetupError(
            f"{shown} lives under {blocked[0]}, which the build's ephemeral uid cannot "
            "enter, and the landlock backend has no mount namespace to show it there",
            "use an interpreter or tool every user can reach (buildjail build --python "
            "/usr/bin/python3), or run as a non-root user, or use --backend native or bwrap "
            "where namespaces are allowed")


def _around_masks(trees: tuple[str, ...], masks: frozenset[str]) -> list[str]:
    """*trees*, each replaced by its unmasked parts where a mask lies inside it.

    Landlock only allows: a masked path inside an allowed tree is left out by allowing the
    tree's other entries instead (the tree's own listing is then not allowed).
    """
    found: list[str] = []
    for tree in trees:
        found += _unmasked_parts(tree, masks)
    return found


def _unmasked_parts(tree: str, masks: frozenset[str]) -> list[str]:
    if tree in masks:
        return []
    inside = [mask for mask in masks if mask.startswith(tree.rstrip("/") + "/")]
    if not inside:
        return [tree]
    try:
        names = sorted(os.listdir(tree))
    except OSError:
        return []
    parts: list[str] = []
    for name in names:
        path = os.path.join(tree, name)
        if os.path.islink(path):  # never a rule: Landlock checks whatever it resolves to
            continue
        if not os.path.isdir(path):
            if path not in masks:
                parts.append(path)
            continue
        parts += _unmasked_parts(path, masks)
    return parts


def _real(paths: tuple[str, ...]) -> tuple[str, ...]:
    """*paths* with their links resolved (the host's own: system trees, declared trees)."""
    return tuple(dict.fromkeys(os.path.realpath(path) for path in paths))


def _own_entries(mounts: MountPlan) -> list[str]:
    """The host files behind the entries the view holds of its own (/etc's small ones, the
    merged-/usr links, the account files); /etc/mtab links to /proc, allowed anyway."""
    return [entry.path for entry in mounts.entries
            if entry.path != "/etc/mtab" and os.path.lexists(entry.path)]


def _command(sandbox: SandboxPlan, scratch: str | None) -> Command:
    request = sandbox.request
    env = dict(sandbox.env)
    if scratch is not None:
        env.update(HOME=os.path.join(scratch, "home"), TMPDIR=os.path.join(scratch, "tmp"))
        # What the other backends' views lack is absent (ENOENT) there, refused (EACCES)
        # here; git takes a refused /etc/gitconfig for a fatal error (setuptools-scm).
        env.update(HIDDEN_CONFIG_ENV)
    return Command(
        argv=request.argv,
        cwd=request.cwd,
        env=env,
        stdio=request.stdio,
        new_session=sandbox.policy.new_session,
        kill_descendants=sandbox.policy.kill_all,
    )


def _layers(sandbox: SandboxPlan, abi: int,
            ruleset: landlock.RulesetPlan | None) -> tuple[str, ...]:
    policy = sandbox.policy
    layers = [f"landlock:abi-{abi}"] if ruleset is not None else []
    if "net" in policy.namespaces:
        layers.append("network:seccomp-unix-pairs-only")
        if ruleset is not None and ruleset.handled_net:
            layers.append("network:landlock-tcp")
    if "ipc" in policy.namespaces:
        layers.append("ipc:seccomp")
    if ruleset is not None and ruleset.scoped:
        layers.append("scope:signals+abstract-unix")
    if ruleset is not None:
        layers.append("ptrace:landlock")
    if policy.kill_all:
        layers.append("processes:subreaper")
    return tuple(layers)


NOT_RECORDED = {
    "attempts:dns": "not recorded: no network namespace of its own, so no loopback resolver "
                    "can be planted (lookups fail as before, unrecorded)",
    "attempts:credentials": "not recorded: the landlock backend plants no decoys in its "
                            "private home (its init is not the build's pid 1)",
}
"""The kinds of attempt this backend does not record, and why."""


def _not_covered(sandbox: SandboxPlan, abi: int) -> dict[str, str]:
    policy = sandbox.policy
    found: dict[str, str] = {}
    if policy.filesystem:
        found.update(NOT_COVERED)
        if not sandbox.leased:
            found.update(NOT_COVERED_NON_ROOT)
    elif "net" in policy.namespaces:
        found["loopback"] = NOT_COVERED["loopback"]
    if "uts" in policy.namespaces:
        found["hostname"] = "the host's hostname is seen (no UTS namespace)"
    if policy.record_attempts:
        found.update(NOT_RECORDED)
    if "net" in policy.namespaces and abi < landlock.TCP_ABI:
        found["network"] = (f"TCP is refused by seccomp alone (Landlock's TCP rules need ABI "
                            f"{landlock.TCP_ABI}, Linux {landlock.FIRST_KERNEL[4]})")
    if sandbox.leased and sandbox.mounts is not None:
        blocked = untraversable_ancestors(interpreter_paths())
        if blocked:
            found["interpreter"] = (
                f"this Python lives under {blocked[0]}, which the build's ephemeral uid "
                "cannot enter: a build needing it fails (use --python with an interpreter "
                "every user can reach, e.g. /usr/bin/python3)")
    return found
