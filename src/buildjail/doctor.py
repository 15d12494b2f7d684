"""``buildjail doctor``: probe, layer by layer, what this host can enforce as root and non-root.

Every layer is checked by doing it for real in a forked child that reports
through a pipe and exits, so nothing (namespace, mount, cgroup) outlives the
check. Sysctls and ``/proc`` are read only to explain a failure and its fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, NoReturn

from . import _kernel as k
from . import cgroups, container, identity, seccomp, userns
from . import hostname as hostname_layer
from .backends import BACKENDS, choose_backend
from .backends import bwrap as _bwrap
from .backends import native as _native  # noqa: F401 - loaded before a probe drops privileges
from .diagnosis import explain, userns_fix
from .errors import SandboxSetupError
from .procfs import read_setting, seccomp_mode
from .sandbox import Sandbox

IdentityKind = Literal["root", "nonroot"]
"""Who a check is for: root (ephemeral uid) or non-root (user namespace)."""

IDENTITIES: tuple[IdentityKind, ...] = ("root", "nonroot")
"""Both identities, in the order the report shows them."""

_NOBODY = 65534
_PROBE_TIMEOUT = 10.0

_NAMESPACES = ("user", "mount", "pid", "net", "ipc", "uts", "cgroup")
_NS_FILES = {"user": "user", "mount": "mnt", "pid": "pid_for_children", "net": "net",
             "ipc": "ipc", "uts": "uts", "cgroup": "cgroup"}
_NS_SYSCTLS = {"user": "user", "mount": "mnt", "pid": "pid", "net": "net", "ipc": "ipc",
               "uts": "uts", "cgroup": "cgroup"}
_PR_GET_NO_NEW_PRIVS = 39
_CAP_SYS_ADMIN = 21
_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

# Stages whose failure means "the non-root path could not be entered".
_DROP = "switch to uid 65534"
_USERNS = "unshare user"
_USERNS_MAP = "write the uid/gid maps"
_ROOT_USERNS = "enter a user namespace mapping every id (root without CAP_SYS_ADMIN)"

_GENERIC_SECCOMP_CAUSE = ("this process runs under a seccomp filter (seccomp mode 2) that "
                          "forbids it")
_GENERIC_SECCOMP_FIX = ("run it without that filter (containers: --security-opt "
                        "seccomp=unconfined), or with a profile allowing unshare, clone with "
                        "CLONE_NEW* and mount")
_CGROUP_FALLBACK = "memory and process limits then fall back to rlimits + the in-sandbox monitor"


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """Whether one isolation layer works for one identity, and if not, why and how to fix it."""

    layer: str
    identity: IdentityKind
    ok: bool
    detail: str
    reason: str | None = None
    fix: str | None = None
    required: bool = True
    checked: bool = True
    backend: str = "native"
    degraded: bool = False
    """The layer works only weaker than ``full`` asks, as the runtime allows (*reason* says)."""


@dataclasses.dataclass(frozen=True)
class HostReport:
    """Facts about this host and the outcome of every layer check."""

    kernel: str
    arch: str
    euid: int
    seccomp_mode: int
    cgroup_version: str
    max_user_namespaces: int | None
    apparmor_restrict_unprivileged_userns: int | None
    unprivileged_userns_clone: int | None
    container: str | None
    runtime: str | None
    """The container runtime found (``podman``, ``docker``, ``kubernetes``...), or None."""
    proc_overmounts: tuple[str, ...]
    checks: list[LayerCheck]
    auto: tuple[str, str] = ("native", "")
    """The backend ``--backend auto`` picks here, and why (see ``choose_backend``)."""

    def can_enforce(self, who: IdentityKind, backend: str = "native") -> bool | None:
        """Whether the ``full`` profile works for *who* with *backend* (None: not checked)."""
        mine = [check for check in self.checks
                if check.identity == who and check.required and check.backend == backend]
        if not all(check.checked for check in mine):
            return None
        return all(check.ok for check in mine)

    def degraded_layers(self, who: IdentityKind, backend: str = "native") -> list[str]:
        """The layers that work only degraded for *who* with *backend*."""
        return [check.layer for check in self.checks if check.identity == who
                and check.degraded and check.backend in ("native", backend)
                and not check.layer.endswith("sandbox:full")]

    def host_dict(self) -> dict[str, Any]:
        """Return the host facts as a JSON-ready dictionary."""
        data = dataclasses.asdict(self)
        del data["checks"], data["auto"]
        data["proc_overmounts"] = list(self.proc_overmounts)
        return data

    def to_dict(self) -> dict[str, Any]:
        """Return the whole report as a JSON-ready dictionary."""
        return {
            "host": self.host_dict(),
            "checks": [dataclasses.asdict(check) for check in self.checks],
            "backends": {name: {who: self.can_enforce(who, name) for who in IDENTITIES}
                         for name in BACKENDS},
            "auto": {"backend": self.auto[0], "reason": self.auto[1]},
        }


# --- probing in a child -------------------------------------------------------


class _Stages:
    """Records the step a probe is at, so that a failure names it."""

    def __init__(self) -> None:
        self.current = "start"

    def __call__(self, name: str) -> None:
        self.current = name


_Probe = Callable[[_Stages, IdentityKind], str]


class _Degraded(Exception):  # noqa: N818 - a probe's outcome, not an error
    """Raised by a probe whose layer works only weaker, as the container allows."""

    def __init__(self, detail: str, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.detail, self.reason, self.fix = detail, reason, fix


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One layer to probe: its name, its probe, and for whom ``full`` needs it."""

    name: str
    probe: _Probe
    privileged: bool = True
    required: tuple[IdentityKind, ...] = IDENTITIES
    backend: str = "native"


def _run_child(stages: _Stages, who: IdentityKind, layer: _Layer, report_fd: int) -> NoReturn:
    message: dict[str, Any]
    try:
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)
        _become(stages, who, layer.privileged)
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)  # a credential change cleared it
        message = {"ok": True, "detail": layer.probe(stages, who)}
    except _Degraded as degraded:
        message = {"ok": True, "detail": degraded.detail, "degraded": degraded.reason,
                   "fix": degraded.fix}
    except SandboxSetupError as error:
        message = {"ok": False, "stage": stages.current, "errno": None,
                   "error": error.reason, "reason": error.reason, "fix": error.fix}
    except OSError as error:
        message = {"ok": False, "stage": stages.current, "errno": error.errno,
                   "error": error.strerror or str(error)}
    except BaseException as error:  # a probe child never returns
        message = {"ok": False, "stage": stages.current, "errno": None, "error": str(error)}
    try:
        os.write(report_fd, json.dumps(message).encode())
    finally:
        os._exit(0)


def _probe(layer: _Layer, who: IdentityKind) -> dict[str, Any]:
    """Run *layer*'s probe for *who* in a forked child; return its report."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _run_child(_Stages(), who, layer, write_fd)
    os.close(write_fd)
    try:
        status = _wait_for(pid)
        data = _drain(read_fd)
    finally:
        os.close(read_fd)
    if data:
        return json.loads(data)  # type: ignore[no-any-return]
    how = "timed out" if status is None else f"exited with status {status}"
    return {"ok": False, "stage": "probe", "errno": None, "error": f"the probe {how}"}


def _wait_for(pid: int) -> int | None:
    """Wait for *pid* (killing it after _PROBE_TIMEOUT); return its exit code, None on timeout."""
    pidfd = os.pidfd_open(pid)
    try:
        timed_out = not select.select([pidfd], [], [], _PROBE_TIMEOUT)[0]
    finally:
        os.close(pidfd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return None if timed_out else os.waitstatus_to_exitcode(status)


def _drain(fd: int) -> bytes:
    """Read what is in the pipe now; grandchildren may still hold its write end."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _in_grandchild(action: Callable[[], None]) -> None:
    """Run *action* in a child (e.g. pid 1 of a new pid namespace); re-raise its errno."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            action()
        except OSError as error:
            code = min(error.errno or 255, 255)
        except BaseException:  # a probe child never returns
            code = 255
        os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 255 or code < 0:
        raise RuntimeError(f"the check in the new pid namespace failed ({code})")
    if code:
        raise OSError(code, os.strerror(code))


# --- entering an identity -------------------------------------------------------


def _become(stages: _Stages, who: IdentityKind, privileged: bool) -> None:
    """Turn this child into *who*; with *privileged*, enter a user namespace as non-root."""
    if who == "root":
        if privileged and userns.contained_root():  # as the sandbox itself starts there
            stages(_ROOT_USERNS)
            userns.unshare_user(all_ids=True)
            _entered[0] = True
        return
    if os.geteuid() == 0:
        stages(_DROP)
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
        k.prctl(k.PR_SET_DUMPABLE, 1)  # as after execve: /proc/self stays ours
    if privileged:
        uid, gid = os.getuid(), os.getgid()
        stages(_USERNS)
        k.unshare(k.CLONE_NEWUSER)
        stages(_USERNS_MAP)
        k.map_current_ids(uid, gid, uid, gid)


# --- the probes -----------------------------------------------------------------


def _namespace_id(name: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/ns/{_NS_FILES[name]}")
    except OSError:
        return None


def _unshare(stages: _Stages, name: str) -> str:
    """Unshare one namespace and check the process really got a new one."""
    before = _namespace_id(name)
    stages(f"unshare {name}")
    k.unshare(k.NAMESPACE_FLAGS[name])
    after = _namespace_id(name)
    if before is not None and before == after:
        raise RuntimeError(f"unshare {name} returned but the namespace did not change")
    return f"new {name} namespace" + (f" {after}" if after else "")


def _namespace_probe(name: str) -> _Probe:
    def probe(stages: _Stages, who: IdentityKind) -> str:
        if name == "user" and who == "nonroot":
            return f"uid {os.getuid()} mapped into a new user namespace"
        if name == "user" and _in_id_mapped_namespace():
            return ("a user namespace mapping every id of this one: root lacks CAP_SYS_ADMIN "
                    "here, so the sandbox creates its namespaces inside one")
        detail = _unshare(stages, name)
        if name == "user":  # root could not map itself (needs CAP_SETFCAP in the parent)
            detail += " (as root the sandbox uses an ephemeral uid instead)"
        return detail

    return probe


def _in_id_mapped_namespace() -> bool:
    """Whether this probe entered the user namespace root without CAP_SYS_ADMIN starts in."""
    return _entered[0]


_entered = [False]
"""Set in a probe child by :func:`_become` when it entered that user namespace."""


def _private_mounts(stages: _Stages) -> None:
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


def _probe_tmpfs(stages: _Stages, who: IdentityKind) -> str:
    _private_mounts(stages)
    target = _scratch()
    stages(f"mount tmpfs on {target}")
    k.mount("tmpfs", target, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=1777,size=64k")
    stages("write into the tmpfs")
    with open(os.path.join(target, "probe"), "w") as stream:
        stream.write("ok")
    return f"private tmpfs on {target}"


def _probe_readonly_bind(stages: _Stages, who: IdentityKind) -> str:
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


def _probe_readonly_root(stages: _Stages, who: IdentityKind) -> str:
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


def _probe_proc(stages: _Stages, who: IdentityKind) -> str:
    _unshare(stages, "pid")
    _private_mounts(stages)
    stages("mount proc")
    _in_grandchild(_mount_fresh_proc)
    return "fresh /proc of a new pid namespace"


def _probe_loopback(stages: _Stages, who: IdentityKind) -> str:
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


def _probe_no_new_privs(stages: _Stages, who: IdentityKind) -> str:
    stages("set no_new_privs")
    k.set_no_new_privs()
    if k.prctl(_PR_GET_NO_NEW_PRIVS) != 1:
        raise RuntimeError("PR_GET_NO_NEW_PRIVS does not report it set")
    return "prctl(PR_SET_NO_NEW_PRIVS)"


def _probe_seccomp(stages: _Stages, who: IdentityKind) -> str:
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


def _capabilities() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as stream:
        for line in stream:
            name, _, value = line.partition(":")
            if name in _CAP_FIELDS:
                values[name] = int(value, 16)
    return values


def _probe_capabilities(stages: _Stages, who: IdentityKind) -> str:
    stages("drop the bounding and ambient sets")
    k.drop_bounding_and_ambient()
    stages("clear the capability sets")
    k.clear_capability_sets()
    left = {name: value for name, value in _capabilities().items() if value}
    if left:
        raise RuntimeError(f"capabilities left: {left}")
    return "bounding, ambient, effective, permitted and inheritable sets empty"


def _probe_identity(stages: _Stages, who: IdentityKind) -> str:
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


def _probe_cgroup(stages: _Stages, who: IdentityKind) -> str:
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


def _probe_sandbox(stages: _Stages, who: IdentityKind, backend: str = "native") -> str:
    stages(f"run /bin/true in the full sandbox ({backend} backend)")
    result = Sandbox("full", backend=backend).run(["/bin/true"], cwd="/")
    if result.exit_code != 0:
        raise RuntimeError(f"/bin/true exited with {result.exit_code} in the sandbox")
    detail = f"/bin/true ran in {result.duration * 1000:.0f} ms with {len(result.layers)} layers"
    if result.degraded:
        names = ", ".join(sorted(result.degraded))
        raise _Degraded(f"{detail}, degraded: {names}",
                        "; ".join(result.degraded.values()),
                        container.hostname_fix(container.detect()))
    return detail


def _probe_hostname(stages: _Stages, who: IdentityKind) -> str:
    hosts_own = hostname_layer.in_the_hosts_uts_namespace()
    _unshare(stages, "uts")
    stages("set the hostname in the new UTS namespace")
    try:
        socket.sethostname("localhost")
    except PermissionError:
        found = container.detect()
        if found is None or hosts_own:
            raise
        raise _Degraded(
            f"kept the container's hostname ({socket.gethostname()})",
            f"{found.title}'s seccomp profile refuses sethostname to a container without "
            "CAP_SYS_ADMIN: the build sees the container's own hostname, not the host's",
            container.hostname_fix(found)) from None
    return "localhost in a new UTS namespace"


def _probe_bwrap(stages: _Stages, who: IdentityKind) -> str:
    stages("find bubblewrap (absolute paths only)")
    executable = _bwrap.require_bwrap()
    version = ".".join(map(str, _bwrap.bwrap_version(executable) or ()))
    mode = os.stat(executable).st_mode
    setuid = " (setuid)" if mode & 0o4000 else ""
    return f"{executable} {version}{setuid}"


def _probe_bwrap_sandbox(stages: _Stages, who: IdentityKind) -> str:
    return _probe_sandbox(stages, who, "bwrap")


_LAYERS: tuple[_Layer, ...] = (
    *(_Layer(f"namespace:{name}", _namespace_probe(name),
             required=("nonroot",) if name == "user" else IDENTITIES) for name in _NAMESPACES),
    _Layer("filesystem:proc", _probe_proc),
    _Layer("filesystem:tmpfs", _probe_tmpfs),
    _Layer("filesystem:readonly-bind", _probe_readonly_bind),
    _Layer("filesystem:readonly-root", _probe_readonly_root),
    _Layer("network:loopback-only", _probe_loopback),
    _Layer("hostname", _probe_hostname),
    _Layer("no_new_privs", _probe_no_new_privs, privileged=False),
    _Layer("capabilities", _probe_capabilities),
    _Layer("seccomp", _probe_seccomp, privileged=False),
    _Layer("identity", _probe_identity),
    _Layer("limits:cgroup", _probe_cgroup, required=()),
    _Layer("sandbox:full", _probe_sandbox, privileged=False),
    _Layer("bwrap:installed", _probe_bwrap, privileged=False, backend="bwrap"),
    _Layer("bwrap:sandbox:full", _probe_bwrap_sandbox, privileged=False, backend="bwrap"),
)
LAYERS: tuple[str, ...] = tuple(layer.name for layer in _LAYERS)
"""The layers the doctor checks, in the order it reports them."""


# --- turning a failure into a reason and a fix ------------------------------------


def _read_int(path: str) -> int | None:
    text = read_setting(path)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def _os_error(code: int | None, text: str) -> OSError:
    """An OSError for explain(): the bare errno message when there is an errno."""
    return OSError(code or 0, os.strerror(code) if code else text)


def _has_sys_admin() -> bool:
    return bool(_capabilities().get("CapEff", 0) >> _CAP_SYS_ADMIN & 1)


def _seccomp_cause() -> str:
    found = container.detect()
    if found is not None and container.namespaces_fix(found) is not None:
        return (f"{found.title}'s default seccomp profile refuses it to a container without "
                "CAP_SYS_ADMIN")
    return _GENERIC_SECCOMP_CAUSE


def _seccomp_fix() -> str:
    return container.namespaces_fix(container.detect()) or _GENERIC_SECCOMP_FIX


def _userns_cause(code: int | None) -> str:
    limit = read_setting("/proc/sys/user/max_user_namespaces")
    if limit == "0":
        return "user.max_user_namespaces is 0 (user namespaces are disabled)"
    if code == errno.ENOSPC:
        return f"the user namespace limit is reached (user.max_user_namespaces={limit})"
    if read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("Ubuntu's AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns=1)")
    if read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return "kernel.unprivileged_userns_clone is 0"
    if seccomp_mode() == 2:
        return _seccomp_cause()
    if code == errno.EINVAL:
        return "the kernel was built without user namespaces (CONFIG_USER_NS)"
    return "the kernel refused an unprivileged user namespace"


def _userns_diagnosis(text: str, code: int | None) -> tuple[str, str]:
    cause = _userns_cause(code)
    fix = _seccomp_fix() if cause == _seccomp_cause() else userns_fix()
    if code == errno.ENOSPC and "is 0" not in cause:
        fix = "raise the limit: sysctl -w user.max_user_namespaces=15000"
    return f"no user namespace ({text}): {cause}", fix


def _unshare_diagnosis(name: str, text: str, code: int | None,
                       who: IdentityKind) -> tuple[str, str]:
    if name == "user":
        return _userns_diagnosis(text, code)
    if code == errno.ENOSPC:
        key = f"user.max_{_NS_SYSCTLS[name]}_namespaces"
        return (f"cannot create a {name} namespace ({text}): {key} is 0 or reached",
                f"sysctl -w {key}=15000")
    if code == errno.EINVAL:
        return (f"cannot create a {name} namespace ({text}): the kernel lacks {name} "
                "namespaces", "use a kernel built with all namespaces (CONFIG_*_NS)")
    failure = explain(f"unshare {name}", _os_error(code, text))
    if seccomp_mode() == 2:
        return f"{failure.reason}: {_seccomp_cause()}", _seccomp_fix()
    if who == "root" and not _has_sys_admin():
        return (f"{failure.reason}: this process lacks CAP_SYS_ADMIN (an unprivileged "
                "container)", "give the container CAP_SYS_ADMIN (--cap-add SYS_ADMIN, or "
                "--privileged), or run buildjail as a non-root user (through user namespaces)")
    return failure.reason, failure.fix


def _proc_diagnosis(text: str, code: int | None) -> tuple[str, str]:
    failure = explain("mount proc", _os_error(code, text))
    if container.proc_overmounts():
        return failure.reason, failure.fix
    if code == errno.EPERM and seccomp_mode() == 2:
        return f"{failure.reason}: {_seccomp_cause()}", _seccomp_fix()
    return failure.reason, failure.fix


def _cgroup_read_only() -> bool:
    for line in (read_setting("/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[4].startswith(cgroups.ROOT) and "cgroup" in line.split(
                " - ", 1)[-1].split()[0]:
            return fields[5].split(",")[0] == "ro"
    return False


def _cgroup_diagnosis(version: str) -> tuple[str, str]:
    where = {
        "v2": "cgroup v2 without the memory and pids controllers delegated to this cgroup, "
              "or a read-only cgroup filesystem",
        "v1": "cgroup v1 only, without writable memory and pids hierarchies",
        "hybrid": "a hybrid cgroup layout without writable v1 memory and pids hierarchies",
        "none": "no cgroup filesystem is mounted",
    }[version]
    if _cgroup_read_only():
        where = "the cgroup file system is mounted read-only (as a container gets it)"
    return (f"no cgroup for limits: {where}; {_CGROUP_FALLBACK}",
            "for kernel-enforced limits use cgroup v2 with memory and pids delegated "
            "(systemd Delegate=yes, or +memory +pids in the parent's cgroup.subtree_control), "
            "or give the container a writable cgroup (--cgroupns=private, --privileged)")


def _diagnose(layer: str, who: IdentityKind, report: dict[str, Any],
              version: str) -> tuple[str, str | None]:
    """Return the reason and the fix for a failed probe."""
    if report.get("reason"):
        return str(report["reason"]), report.get("fix") or None
    stage, code, error = str(report["stage"]), report.get("errno"), str(report["error"])
    text = f"{stage}: {os.strerror(code) if code else error}"
    if stage == "create a cgroup" and code is None:
        return _cgroup_diagnosis(version)
    if stage == _DROP:
        return (f"cannot test the non-root path ({text})",
                "run `buildjail doctor` as the non-root user")
    if stage in (_USERNS, _USERNS_MAP, _ROOT_USERNS):
        return _userns_diagnosis(text, code)
    if stage.startswith("unshare "):
        return _unshare_diagnosis(stage.split()[1], text, code, who)
    if stage == "mount proc":
        return _proc_diagnosis(text, code)
    return _generic_diagnosis(layer, stage, text, code, error)


def _generic_diagnosis(layer: str, stage: str, text: str, code: int | None,
                       error: str) -> tuple[str, str]:
    if code in (errno.EPERM, errno.EACCES) and seccomp_mode() == 2:
        return f"{text}: {_seccomp_cause()}", _seccomp_fix()
    if stage == "build the seccomp filter":
        return (f"no seccomp filter for this machine ({error})",
                "run on x86_64 or aarch64, or set isolation.seccomp = false in the policy")
    failure = explain("seccomp" if "seccomp" in stage else stage, _os_error(code, error))
    fix = failure.fix
    if "buildjail doctor" in fix:
        fix = (f"no known fix: please report it with the output of `buildjail doctor --json` "
               f"(kernel {os.uname().release})")
    return f"{layer} failed at {failure.reason}", fix


# --- host facts ---------------------------------------------------------------------


def _cgroup_version() -> str:
    """Return v2, v1, hybrid or none, as the cgroup filesystem under cgroups.ROOT shows it."""
    root = cgroups.ROOT
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    try:
        names = os.listdir(root)
    except OSError:
        return "none"
    v1 = [name for name in names if name != "unified"
          and os.path.exists(os.path.join(root, name, "cgroup.procs"))]
    if not v1:
        return "none"
    unified = os.path.exists(os.path.join(root, "unified", "cgroup.controllers"))
    return "hybrid" if unified else "v1"


def _check(layer: _Layer, who: IdentityKind, version: str) -> LayerCheck:
    required = who in layer.required or (
        layer.name == "namespace:user" and os.geteuid() == 0 and userns.contained_root())
    if who == "root" and os.geteuid() != 0:
        return LayerCheck(layer.name, who, False, "not checked (run as root)",
                          required=required, checked=False, backend=layer.backend)
    if layer.name == "limits:cgroup" and who == "nonroot":
        return LayerCheck(layer.name, who, False, "rlimits + in-sandbox monitor",
                          "buildjail creates cgroups only as root; " + _CGROUP_FALLBACK,
                          "nothing to do; run as root for kernel-enforced cgroup limits",
                          required=required)
    report = _probe(layer, who)
    if report["ok"]:
        degraded = report.get("degraded")
        return LayerCheck(layer.name, who, True, str(report["detail"]),
                          str(degraded) if degraded else None,
                          str(report["fix"]) if degraded else None, required=required,
                          backend=layer.backend, degraded=bool(degraded))
    reason, fix = _diagnose(layer.name, who, report, version)
    return LayerCheck(layer.name, who, False, f"failed at: {report['stage']}", reason, fix,
                      required=required, backend=layer.backend)


def _point_to_layers(checks: list[LayerCheck]) -> list[LayerCheck]:
    """Give a failed end-to-end run the fix of the first missing layer, if it has none."""
    return [_with_layer_fix(check, checks) for check in checks]


def _with_layer_fix(check: LayerCheck, checks: list[LayerCheck]) -> LayerCheck:
    if not check.layer.endswith("sandbox:full") or check.ok or "doctor" not in (check.fix or ""):
        return check
    missing = [other for other in checks if other.identity == check.identity
               and other.required and other.checked and not other.ok
               and other.layer != check.layer and other.backend in ("native", check.backend)]
    if not missing:
        return check
    return dataclasses.replace(
        check, reason=f"{check.reason} (first missing layer: {missing[0].layer})",
        fix=missing[0].fix)


def check_host() -> HostReport:
    """Probe every layer, as root (if we are root) and as non-root; return the report."""
    sys.stdout.flush()
    sys.stderr.flush()
    version = _cgroup_version()
    checks = [_check(layer, who, version) for who in IDENTITIES for layer in _LAYERS]
    checks = _point_to_layers(checks)
    uname = os.uname()
    found = container.detect()
    return HostReport(
        kernel=uname.release,
        arch=uname.machine,
        euid=os.geteuid(),
        seccomp_mode=seccomp_mode(),
        cgroup_version=version,
        max_user_namespaces=_read_int("/proc/sys/user/max_user_namespaces"),
        apparmor_restrict_unprivileged_userns=_read_int(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        unprivileged_userns_clone=_read_int("/proc/sys/kernel/unprivileged_userns_clone"),
        container=found.describe() if found else None,
        runtime=found.runtime if found else None,
        proc_overmounts=container.proc_overmounts(),
        checks=checks,
        auto=choose_backend(),
    )


# --- output -------------------------------------------------------------------------


def _cell(check: LayerCheck) -> str:
    if not check.checked:
        return "not checked"
    if check.degraded:
        return "degraded"
    if check.ok:
        return "ok"
    return "MISSING" if check.required else "missing (optional)"


def _verdict(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "not checked (run as root)"}[value]


def render_table(report: HostReport) -> str:
    """Return the human-readable report: host facts, the layer table, reasons and fixes."""
    modes = {0: "none", 1: "strict", 2: "filter"}
    lines = [
        f"host: Linux {report.kernel} {report.arch}, euid {report.euid}, "
        f"container: {report.container or 'no'}",
        f"seccomp: {modes.get(report.seccomp_mode, report.seccomp_mode)}, "
        f"cgroups: {report.cgroup_version}, "
        f"user.max_user_namespaces: {_fact(report.max_user_namespaces)}, "
        f"apparmor_restrict_unprivileged_userns: "
        f"{_fact(report.apparmor_restrict_unprivileged_userns)}",
        "",
    ]
    by_key = {(check.layer, check.identity): check for check in report.checks}
    width = max(len(name) for name in LAYERS) + 2
    lines.append(f"{'layer':<{width}}{'root':<20}non-root")
    for name in LAYERS:
        root, nonroot = by_key[(name, "root")], by_key[(name, "nonroot")]
        lines.append(f"{name:<{width}}{_cell(root):<20}{_cell(nonroot)}")
    problems = _grouped_problems(report.checks)
    if problems:
        lines += ["", "what is missing or degraded, why, and the fix:"]
    degraded = {check.layer for check in report.checks if check.degraded}
    for (who, reason, fix), layers in problems.items():
        shown = "non-root" if who == "nonroot" else "root"
        state = "degraded, " if set(layers) <= degraded else ""
        lines.append(f"- {', '.join(layers)} ({state}{shown}): {reason}")
        if fix:
            lines.append(f"    fix: {fix}")
    lines.append("")
    for backend in BACKENDS:
        lines.append(f"full profile, {backend} backend: as root: "
                     f"{_verdict_of(report, 'root', backend)}; as non-root: "
                     f"{_verdict_of(report, 'nonroot', backend)}")
    lines.append(f"--backend auto uses {report.auto[0]}: {report.auto[1]}")
    return "\n".join(lines)


def _verdict_of(report: HostReport, who: IdentityKind, backend: str) -> str:
    verdict = _verdict(report.can_enforce(who, backend))
    weaker = report.degraded_layers(who, backend)
    return f"{verdict} (degraded: {', '.join(weaker)})" if weaker and verdict == "yes" else verdict


def _grouped_problems(
    checks: list[LayerCheck],
) -> dict[tuple[str, str | None, str | None], list[str]]:
    """Group the failed checks that share an identity, a reason and a fix."""
    groups: dict[tuple[str, str | None, str | None], list[str]] = {}
    for check in checks:
        if check.checked and (check.degraded or not check.ok):
            groups.setdefault((check.identity, check.reason, check.fix), []).append(check.layer)
    return groups


def _fact(value: int | None) -> str:
    return "absent" if value is None else str(value)


def main(json_output: bool = False) -> int:
    """Run the checks, print them; return 0 if ``full`` works with the ``auto`` backend."""
    start = time.monotonic()
    report = check_host()
    if json_output:
        data = report.to_dict()
        data["duration"] = round(time.monotonic() - start, 3)
        print(json.dumps(data, indent=2))
    else:
        print(render_table(report))
    current: IdentityKind = "root" if os.geteuid() == 0 else "nonroot"
    return 0 if report.can_enforce(current, report.auto[0]) else 1
