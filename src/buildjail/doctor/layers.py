"""The probes: each does one isolation layer for real, in a probe child, and describes it."""

from __future__ import annotations

import contextlib
import errno
import os
import socket

from .._linux import cgroups, container, identity, landlock, seccomp
from .._linux import hostname as hostname_layer
from .._linux import kernel as k
from .._linux.procfs import seccomp_mode
from ..backends import bwrap as _bwrap
from ..backends import landlock as _landlock
from ..backends import native as _native  # noqa: F401 - loaded before a probe drops privileges
from ..errors import SandboxSetupError
from ..sandbox import Sandbox
from .child import Degraded, Layer, Probe, Stages, in_grandchild, in_id_mapped_namespace
from .report import IDENTITIES, IdentityKind

_NAMESPACES = ("user", "mount", "pid", "net", "ipc", "uts", "cgroup")
_NS_FILES = {"user": "user", "mount": "mnt", "pid": "pid_for_children", "net": "net",
             "ipc": "ipc", "uts": "uts", "cgroup": "cgroup"}
_PR_GET_NO_NEW_PRIVS = 39
_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _namespace_id(name: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/ns/{_NS_FILES[name]}")
    except OSError:
        return None


def _unshare(stages: Stages, name: str) -> str:
    """Unshare one namespace and check the process really got a new one."""
    before = _namespace_id(name)
    stages(f"unshare {name}")
    k.unshare(k.NAMESPACE_FLAGS[name])
    after = _namespace_id(name)
    if before is not None and before == after:
        raise RuntimeError(f"unshare {name} returned but the namespace did not change")
    return f"new {name} namespace" + (f" {after}" if after else "")


def _namespace_probe(name: str) -> Probe:
    def probe(stages: Stages, who: IdentityKind) -> str:
        if name == "user" and who == "nonroot":
            return f"uid {os.getuid()} mapped into a new user namespace"
        if name == "user" and in_id_mapped_namespace():
            return ("a user namespace mapping every id of this one: root lacks CAP_SYS_ADMIN "
                    "here, so the sandbox creates its namespaces inside one")
        detail = _unshare(stages, name)
        if name == "user":  # root could not map itself (needs CAP_SETFCAP in the parent)
            detail += " (as root the sandbox uses an ephemeral uid instead)"
        return detail

    return probe


def _private_mounts(stages: Stages) -> None:
    _unshare(stages, "mount")
    stages("make the mounts private")
    k.make_mounts_private()


def _scratch() -> str:
    return next((path for path in ("/tmp", "/run", "/mnt", "/dev") if os.path.isdir(path)), "/")


def _expect_read_only(path: str) -> None:
    try:
        fd = os.open(os.path.join(path, ".buildjail-doctor"), os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as error:
        if error.errno == errno.EROFS:
            return
        raise
    os.close(fd)
    raise RuntimeError(f"{path} is still writable")


def _probe_tmpfs(stages: Stages, who: IdentityKind) -> str:
    _private_mounts(stages)
    target = _scratch()
    stages(f"mount tmpfs on {target}")
    k.mount("tmpfs", target, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=1777,size=64k")
    stages("write into the tmpfs")
    with open(os.path.join(target, "probe"), "w") as stream:
        stream.write("ok")
    return f"private tmpfs on {target}"


def _probe_readonly_bind(stages: Stages, who: IdentityKind) -> str:
    _probe_tmpfs(stages, who)
    source, target = os.path.join(_scratch(), "source"), os.path.join(_scratch(), "target")
    os.mkdir(source)
    os.mkdir(target)
    stages("open_tree")
    fd = k.open_tree_clone(source)
    try:
        stages("mount_setattr")
        k.set_mount_attributes(fd, k.READONLY_ATTRIBUTES)
        stages("move_mount")
        k.move_mount(fd, target)
    finally:
        os.close(fd)
    stages("check the bind mount is read-only")
    _expect_read_only(target)
    return "open_tree + mount_setattr(ro, nosuid, nodev) + move_mount"


def _probe_readonly_root(stages: Stages, who: IdentityKind) -> str:
    _probe_tmpfs(stages, who)
    stages("mount_setattr")
    k.set_mount_attributes("/", k.READONLY_ATTRIBUTES)
    stages("check the tree is read-only")
    _expect_read_only(_scratch())
    return "mount_setattr(ro, nosuid, nodev) on the whole tree"


def _mount_fresh_proc() -> None:
    k.mount_proc()
    if os.readlink("/proc/self") != "1":
        raise RuntimeError("the new /proc does not show the new pid namespace")


def _probe_proc(stages: Stages, who: IdentityKind) -> str:
    _unshare(stages, "pid")
    _private_mounts(stages)
    stages("mount proc")
    in_grandchild(_mount_fresh_proc)
    return "fresh /proc of a new pid namespace"


def _probe_loopback(stages: Stages, who: IdentityKind) -> str:
    _unshare(stages, "net")
    stages("bring loopback up")
    k.loopback_up()
    stages("check the interfaces")
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        raise RuntimeError(f"the new network namespace has interfaces {names}")
    stages("send a datagram over loopback")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1)
        sock.sendto(b"ping", sock.getsockname())
        if sock.recv(16) != b"ping":
            raise RuntimeError("loopback did not echo")
    return "only lo, up and working"


def _probe_no_new_privs(stages: Stages, who: IdentityKind) -> str:
    stages("set no_new_privs")
    k.set_no_new_privs()
    if k.prctl(_PR_GET_NO_NEW_PRIVS) != 1:
        raise RuntimeError("PR_GET_NO_NEW_PRIVS does not report it set")
    return "prctl(PR_SET_NO_NEW_PRIVS)"


def _probe_seccomp(stages: Stages, who: IdentityKind) -> str:
    stages("set no_new_privs")
    k.set_no_new_privs()
    stages("build the seccomp filter")
    program = seccomp.build_filter()
    stages("install the seccomp filter")
    seccomp.install_filter(program)
    stages("check the filter blocks unshare")
    try:
        k.unshare(0)
    except OSError as error:
        if error.errno == errno.EPERM and seccomp_mode() == 2:
            return f"filter of {len(program) // 8} instructions; unshare gets EPERM"
        raise
    raise RuntimeError("the filter is installed but unshare still works")


def capabilities() -> dict[str, int]:
    """This process's capability sets, as /proc/self/status shows them (a bit mask each)."""
    values = {}
    with open("/proc/self/status") as stream:
        for line in stream:
            name, _, value = line.partition(":")
            if name in _CAP_FIELDS:
                values[name] = int(value, 16)
    return values


def _probe_capabilities(stages: Stages, who: IdentityKind) -> str:
    stages("drop the bounding and ambient sets")
    k.drop_bounding_and_ambient()
    stages("clear the capability sets")
    k.clear_capability_sets()
    left = {name: value for name, value in capabilities().items() if value}
    if left:
        raise RuntimeError(f"capabilities left: {left}")
    return "bounding, ambient, effective, permitted and inheritable sets empty"


def _probe_identity(stages: Stages, who: IdentityKind) -> str:
    if who == "nonroot":
        return (f"runs as the caller's uid ({os.getuid()}) in a user namespace; no ephemeral "
                "uid without root, the caller's files are protected by masks")
    stages("find the ephemeral id range")
    id_range = identity.host_range()
    stages("lease an ephemeral id")
    lease = identity.acquire(id_range)
    uid, gid = lease.identity.uid, lease.identity.gid
    stages(f"switch to the ephemeral uid {uid}")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    lease.release()
    if os.getresuid() != (uid, uid, uid) or os.getgroups():
        raise RuntimeError("the uid switch did not take effect")
    return f"ephemeral uid {uid} from {id_range.start}-{id_range.start + id_range.size - 1}"


def _probe_cgroup(stages: Stages, who: IdentityKind) -> str:
    stages("create a cgroup")
    group = cgroups.create(f"buildjail-doctor-{os.getpid()}", 256 << 20, 64)
    if group is None:
        raise _NoCgroupError()
    try:
        stages("move into the cgroup")
        group.add(os.getpid())
        with open("/proc/self/cgroup") as stream:
            entered = f"buildjail-doctor-{os.getpid()}" in stream.read()
    finally:
        with contextlib.suppress(OSError):
            group.leave(os.getpid())
        group.remove()
    if not entered:
        raise RuntimeError("the process did not enter the cgroup")
    return f"cgroup v{group.version} with memory and pids limits"


class _NoCgroupError(Exception):
    """cgroups.create found no cgroup to give."""


def _probe_sandbox(stages: Stages, who: IdentityKind, backend: str = "native") -> str:
    stages(f"run /bin/true in the full sandbox ({backend} backend)")
    result = Sandbox("full", backend=backend).run(["/bin/true"], cwd="/")
    if result.exit_code != 0:
        raise RuntimeError(f"/bin/true exited with {result.exit_code} in the sandbox")
    detail = f"/bin/true ran in {result.duration * 1000:.0f} ms with {len(result.layers)} layers"
    if result.degraded:
        names = ", ".join(sorted(result.degraded))
        fix = (_LANDLOCK_FIX if backend == "landlock"
               else container.hostname_fix(container.detect()))
        raise Degraded(f"{detail}, degraded: {names}", "; ".join(result.degraded.values()),
                       fix)
    return detail


_LANDLOCK_FIX = ("nothing to do where namespaces are refused; where they are allowed, the "
                 "native and bwrap backends give all of it")


def _probe_landlock(stages: Stages, who: IdentityKind) -> str:
    stages("ask the kernel for its Landlock ABI")
    abi = landlock.abi_version()
    if abi == 0:
        raise SandboxSetupError(landlock.unavailable_reason(),
                                "boot a kernel with Landlock enabled (Linux 6.2 or newer)")
    needed = _landlock.NON_ROOT_ABI if who == "nonroot" else _landlock.FILESYSTEM_ABI
    if abi < needed:
        release = landlock.FIRST_KERNEL[needed]
        raise SandboxSetupError(f"Landlock ABI {abi}; the full profile needs ABI {needed} "
                                f"here (Linux {release})", f"run on Linux {release} or newer")
    stages("enforce a ruleset that shows only /usr")
    k.set_no_new_privs()
    landlock.restrict_self(landlock.RulesetPlan(abi=abi, read=("/usr",), deny_tcp=True,
                                                scope=True))
    stages("check a file outside the ruleset is refused")
    try:
        with open("/etc/hostname", "rb"):
            pass
    except PermissionError:
        return f"ABI {abi} (Linux {landlock.FIRST_KERNEL.get(abi, '?')}+): a file outside " \
               "the ruleset is refused"
    raise RuntimeError("the ruleset is enforced but /etc/hostname can still be opened")


def _probe_landlock_sandbox(stages: Stages, who: IdentityKind) -> str:
    return _probe_sandbox(stages, who, "landlock")


def _probe_hostname(stages: Stages, who: IdentityKind) -> str:
    hosts_own = hostname_layer.in_the_hosts_uts_namespace()
    _unshare(stages, "uts")
    stages("set the hostname in the new UTS namespace")
    try:
        socket.sethostname("localhost")
    except PermissionError:
        found = container.detect()
        if found is None or hosts_own:
            raise
        raise Degraded(
            f"kept the container's hostname ({socket.gethostname()})",
            f"{found.title}'s seccomp profile refuses sethostname to a container without "
            "CAP_SYS_ADMIN: the build sees the container's own hostname, not the host's",
            container.hostname_fix(found)) from None
    return "localhost in a new UTS namespace"


def _probe_bwrap(stages: Stages, who: IdentityKind) -> str:
    stages("find bubblewrap (absolute paths only)")
    executable = _bwrap.require_bwrap()
    version = ".".join(map(str, _bwrap.bwrap_version(executable) or ()))
    mode = os.stat(executable).st_mode
    setuid = " (setuid)" if mode & 0o4000 else ""
    return f"{executable} {version}{setuid}"


def _probe_bwrap_sandbox(stages: Stages, who: IdentityKind) -> str:
    return _probe_sandbox(stages, who, "bwrap")


LAYER_PROBES: tuple[Layer, ...] = (  # the order the report shows them
    *(Layer(f"namespace:{name}", _namespace_probe(name),
             required=("nonroot",) if name == "user" else IDENTITIES) for name in _NAMESPACES),
    Layer("filesystem:proc", _probe_proc),
    Layer("filesystem:tmpfs", _probe_tmpfs),
    Layer("filesystem:readonly-bind", _probe_readonly_bind),
    Layer("filesystem:readonly-root", _probe_readonly_root),
    Layer("network:loopback-only", _probe_loopback),
    Layer("hostname", _probe_hostname),
    Layer("no_new_privs", _probe_no_new_privs, privileged=False),
    Layer("capabilities", _probe_capabilities),
    Layer("seccomp", _probe_seccomp, privileged=False),
    Layer("identity", _probe_identity),
    Layer("limits:cgroup", _probe_cgroup, required=()),
    Layer("sandbox:full", _probe_sandbox, privileged=False),
    Layer("bwrap:installed", _probe_bwrap, privileged=False, backend="bwrap"),
    Layer("bwrap:sandbox:full", _probe_bwrap_sandbox, privileged=False, backend="bwrap"),
    Layer("landlock:abi", _probe_landlock, privileged=False, backend="landlock"),
    Layer("landlock:sandbox:full", _probe_landlock_sandbox, privileged=False,
          backend="landlock"),
)
LAYERS: tuple[str, ...] = tuple(layer.name for layer in LAYER_PROBES)
"""The layers the doctor checks, in the order it reports them."""


