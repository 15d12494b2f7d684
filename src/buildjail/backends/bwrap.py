"""The bwrap backend: the same policy, compiled to a bubblewrap command line.

The shared supervisor still leases the identity, lends and hands back the writable trees,
enforces the wall time and reports; the init still sets the rlimits, drops to the
ephemeral identity, drops every capability and sets ``no_new_privs``, makes the network
(loopback up) and IPC namespaces, so that its monitor counts what the build holds there,
and watches memory and processes. bubblewrap then builds the other namespaces and the
filesystem view, disables nested user namespaces, and loads buildjail's seccomp filter just
before the command runs.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile

from .._linux import kernel as k
from .._linux.filesystem import (
    MASK_TMPFS_SIZE,
    PRIVATE_TMPFS_MODES,
    STAGE_DIR,
    Entry,
    MountPlan,
    untraversable_ancestors,
)
from ..errors import SandboxSetupError
from ..limits import Limits
from ..policy import Policy
from ..result import RunResult
from ._supervisor import run_supervised
from .base import Command, Confinement, Launch, Request, SandboxPlan, SetUp, decoys_of

CANDIDATES = ("/usr/bin/bwrap", "/usr/local/bin/bwrap")
"""Where bubblewrap is looked for: absolute paths only, never the build's PATH."""
MINIMUM_VERSION = (0, 8, 0)
"""``--disable-userns``, ``--size`` and the exec report on ``--json-status-fd``."""
_WRAPPER_PROCESSES = 2
"""bubblewrap's monitor and its init run beside the command, under the build's uid."""
_READ_ONLY_AFTER = ("/dev", "/proc", "/run")
_NAMESPACE_OPTIONS = (("pid", "--unshare-pid"), ("uts", "--unshare-uts"),
                      ("cgroup", "--unshare-cgroup"))
_INIT_NAMESPACES = (("net", k.CLONE_NEWNET), ("ipc", k.CLONE_NEWIPC))
"""Made by buildjail's init, not bubblewrap, so the init's monitor shares them and counts
the memory the build holds there (socket buffers, System V segments and queues)."""


class BwrapBackend:
    """Enforce policies through bubblewrap, with buildjail's supervisor around it."""

    name = "bwrap"

    def run(self, request: Request) -> RunResult:
        """Run the command through bubblewrap; raise SandboxSetupError if it cannot."""
        executable = require_bwrap()
        return run_supervised(request, self.name, functools.partial(plan_bwrap, executable))


def find_bwrap() -> str | None:
    """The absolute path of an installed bubblewrap, or None."""
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


@functools.cache
def bwrap_version(executable: str) -> tuple[int, ...] | None:
    """The version ``bwrap --version`` reports, or None when it does not run."""
    try:
        output = subprocess.run([executable, "--version"], capture_output=True, text=True,
                                check=False, timeout=10, env={}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", output)
    return tuple(int(part or 0) for part in found.groups()) if found else None


def require_bwrap() -> str:
    """Return bubblewrap's path; raise SandboxSetupError when it is missing or too old."""
    executable = find_bwrap()
    if executable is None:
        raise SandboxSetupError(
            f"the bwrap backend needs bubblewrap, which is not installed in {CANDIDATES[0]}",
            "install it (apt-get install bubblewrap; dnf install bubblewrap), "
            "or use --backend native",
        )
    version = bwrap_version(executable)
    if version is None or version < MINIMUM_VERSION:
        shown = ".".join(map(str, version)) if version else "unknown"
        raise SandboxSetupError(
            f"{executable} is bubblewrap {shown}; the bwrap backend needs "
            f"{'.'.join(map(str, MINIMUM_VERSION))} or newer",
            "upgrade bubblewrap, or use --backend native",
        )
    return executable


def plan_bwrap(executable: str, sandbox: SandboxPlan) -> Launch:
    """The bwrap launch: the init confines itself and starts bubblewrap, which builds the rest.

    Opens the descriptors bubblewrap reads (its status pipe, data and seccomp memfds); runs
    nothing. The launch's ``fds`` are the caller's to close.
    """
    fds: list[int] = []
    try:
        return _plan_bwrap(executable, sandbox, fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _plan_bwrap(executable: str, sandbox: SandboxPlan, fds: list[int]) -> Launch:
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    fds += (status_r, status_w)
    mounts = sandbox.mounts
    staged = _staged(mounts) if mounts is not None and sandbox.leased else {}
    argv = compile_argv(executable, sandbox, staged, status_w, fds)
    block_w = None
    if decoys_of(mounts):  # bubblewrap waits there until the init watches its decoys
        block_r, block_w = os.pipe2(os.O_CLOEXEC)
        fds += (block_r, block_w)
        at = argv.index("--json-status-fd") + 2
        argv[at:at] = ["--block-fd", str(block_r)]
    kept = (status_r, block_w)
    return Launch(
        setup=_setup(sandbox, staged),
        confinement=_confinement(sandbox),
        command=Command(
            argv=tuple(argv),
            cwd="/",
            env=sandbox.env,
            stdio=sandbox.request.stdio,
            new_session=False,  # bubblewrap's --new-session
            inherited_fds=tuple(fd for fd in fds if fd not in kept),
            status_fd=status_r,
            block_fd=block_w,
        ),
        fds=tuple(fds),
    )


def compile_argv(executable: str, sandbox: SandboxPlan, staged: dict[str, str],
                 status_fd: int, fds: list[int]) -> list[str]:
    """The bubblewrap command line for *sandbox*; the data descriptors it reads join *fds*."""
    mounts = sandbox.mounts
    argv = [executable, *_lifetime_options(sandbox), "--json-status-fd", str(status_fd),
            *_namespace_options(sandbox)]
    if mounts is not None:
        argv += _filesystem_options(mounts, staged, fds)
    else:
        argv += ["--dev-bind", "/", "/"]
        if {"pid", "mount"} <= sandbox.namespaces:
            argv += ["--proc", "/proc"]
    if sandbox.seccomp_program is not None:
        argv += ["--seccomp", str(_data_fd("seccomp", sandbox.seccomp_program, fds))]
    return [*argv, "--chdir", sandbox.request.cwd, "--", *sandbox.request.argv]


def _lifetime_options(sandbox: SandboxPlan) -> list[str]:
    """``--die-with-parent``, unless the init is pid 1 of the sandbox's pid namespace: then
    its death ends bubblewrap's namespace within its own, and without the option what the
    command leaves running outlives bubblewrap's monitor (not its namespace's end) long
    enough for the init to record it."""
    return [] if "pid" in sandbox.namespaces else ["--die-with-parent"]


def _setup(sandbox: SandboxPlan, staged: dict[str, str]) -> SetUp:
    """The init makes a private /proc and the staged trees; the net and IPC namespaces."""
    namespaces = sandbox.policy.namespaces
    mounts = sandbox.mounts
    own_proc = "pid" in namespaces
    flags = k.CLONE_NEWNS if own_proc or staged else 0
    for name, flag in _INIT_NAMESPACES:
        if name in namespaces:
            flags |= flag
    return SetUp(
        namespaces=flags,
        loopback="net" in namespaces,
        fresh_proc=own_proc,
        decoys=decoys_of(mounts),
        dns_trap=sandbox.policy.record_attempts is True and "net" in namespaces,
        record_calls=sandbox.policy.record_attempts is True and {"net", "pid"} <= namespaces,
        record_leftovers=sandbox.policy.record_attempts is True and own_proc,
        staged=tuple((source, target, source in mounts.writable)
                     for source, target in staged.items()) if mounts else (),
    )


def _confinement(sandbox: SandboxPlan) -> Confinement:
    """The init's confinement, less what bubblewrap applies itself (the seccomp filter)."""
    policy = sandbox.policy
    return Confinement(
        identity=sandbox.identity,
        switch_identity=sandbox.leased,
        # bubblewrap needs root's capabilities to build the sandbox when it runs as root:
        # it drops them itself (--cap-drop ALL, in its user namespace).
        drop_capabilities=policy.drop_capabilities and (sandbox.leased or not sandbox.root),
        no_new_privs=policy.no_new_privs,
        seccomp_program=None,  # --seccomp: loaded just before the command runs
        limits=_with_wrapper_processes(policy.limits),
    )


def _with_wrapper_processes(limits: Limits) -> Limits:
    """The limits, with room for bubblewrap's own processes beside the command."""
    if not limits.processes:
        return limits
    return limits._replace(processes=limits.processes + _WRAPPER_PROCESSES)


def _namespace_options(sandbox: SandboxPlan) -> list[str]:
    policy = sandbox.policy
    hostname = sandbox.hostname
    options = []
    if _user_namespace(policy, sandbox.leased, sandbox.root):
        options.append("--unshare-user")
        if sandbox.identity.mapped:  # bubblewrap maps them onto the leased ids it runs as
            who = sandbox.identity
            options += ["--uid", str(who.inside_uid), "--gid", str(who.inside_gid)]
        if policy.drop_capabilities:
            options.append("--disable-userns")
    options += [option for name, option in _NAMESPACE_OPTIONS if name in policy.namespaces]
    if "uts" in policy.namespaces and hostname is not None:  # None: the container's is kept
        options += ["--hostname", hostname]
    if policy.drop_capabilities:
        options += ["--cap-drop", "ALL"]
    if policy.new_session:
        options.append("--new-session")
    return options


def _user_namespace(policy: Policy, outsider: bool, root: bool) -> bool:
    """Whether bubblewrap makes a user namespace: always, unless root keeps its capabilities.

    Root without an ephemeral identity but with capabilities to drop also gets one, so
    bubblewrap drops the bounding set there and can disable nested user namespaces.
    """
    return (not root or outsider or "user" in policy.namespaces
            or policy.drop_capabilities)


def _staged(mounts: MountPlan) -> dict[str, str]:
    """Exposed trees the build's identity cannot reach on the host, and where to stage them."""
    exposed = (*mounts.readonly, *mounts.writable)
    hidden = [path for path in exposed if untraversable_ancestors((path,))]
    return {path: f"{STAGE_DIR}/{index}" for index, path in enumerate(hidden)}


def _filesystem_options(mounts: MountPlan, staged: dict[str, str], fds: list[int]) -> list[str]:
    """The mount options, in the order the native backend builds the same view.

    bubblewrap's root is a fresh tmpfs already; what it shows of the host is bound in.
    """
    size = ["--size", str(mounts.tmpfs_size)] if mounts.tmpfs_size else []
    options = _entry_options(mounts.entries, fds)
    options += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", *size,
                "--tmpfs", "/dev/shm",
                # --dev binds the caller's terminal there when stdout is one: hide it.
                *_mask_options(["/dev/console"], mounts, fds)]
    for path, mode in PRIVATE_TMPFS_MODES.items():
        options += ["--perms", mode, *size, "--tmpfs", path]
    options += ["--perms", "0700", *size, "--tmpfs", mounts.identity.home]
    options += _entry_options(mounts.home_entries, fds)
    for path, writable in mounts.trees():
        options += ["--bind" if writable else "--ro-bind", staged.get(path, path), path]
    options += _mask_options(mounts.masks(), mounts, fds)
    # bubblewrap leaves its root, /dev, /proc and our /run writable (and owned by the build's
    # uid): read-only, as native builds them. Not recursive: the binds stay as they are.
    for path in (*mounts.masked_dirs, *_READ_ONLY_AFTER, "/"):
        options += ["--remount-ro", path]
    return options


def _entry_options(entries: tuple[Entry, ...], fds: list[int]) -> list[str]:
    """The view's own directories, links and files (their data in memfds)."""
    options = []
    for entry in entries:
        if entry.kind == "dir":
            options += ["--perms", f"{entry.mode:04o}", "--dir", entry.path]
        elif entry.kind == "link":
            options += ["--symlink", os.fsdecode(entry.data), entry.path]
        else:
            fd = _data_fd(os.path.basename(entry.path), entry.data, fds)
            options += ["--perms", f"{entry.mode:04o}", "--file", str(fd), entry.path]
    return options


def _mask_options(paths: list[str], mounts: MountPlan, fds: list[int]) -> list[str]:
    """Cover directories with an empty tmpfs and files with an empty, unreadable file."""
    options = []
    for path in paths:
        if path in mounts.masked_dirs:
            options += ["--perms", "0755", "--size", str(MASK_TMPFS_SIZE), "--tmpfs", path]
        else:
            options += ["--perms", "0000", "--ro-bind-data", str(_data_fd("masked", b"", fds)),
                        path]
    return options


def _data_fd(name: str, data: bytes, fds: list[int]) -> int:
    """A memfd holding *data*, read by bubblewrap from its start.

    Where memfds are refused (buildjail's own seccomp filter on the caller, or a runtime's),
    an unnamed temporary file does instead.
    """
    try:
        fd = os.memfd_create(f"buildjail-{name}", os.MFD_CLOEXEC)
    except OSError:
        with tempfile.TemporaryFile() as stream:
            fd = os.dup(stream.fileno())  # not inheritable, as dup makes it
    fds.append(fd)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd
