"""Turn a failed probe into a reason and a fix, from the host's sysctls, /proc and container."""

from __future__ import annotations

import errno
import os
from typing import Any

from .._linux import cgroups, container
from .._linux.diagnosis import explain, seccomp_refusal, userns_refusal
from .._linux.procfs import read_setting, seccomp_mode
from .child import DROP, ROOT_USERNS, USERNS, USERNS_MAP
from .layers import capabilities
from .report import IdentityKind

_NS_SYSCTLS = {"user": "user", "mount": "mnt", "pid": "pid", "net": "net", "ipc": "ipc",
               "uts": "uts", "cgroup": "cgroup"}
_CAP_SYS_ADMIN = 21
CGROUP_FALLBACK = "memory and process limits then fall back to rlimits + the in-sandbox monitor"
"""What stands in for cgroup limits where buildjail gets no cgroup."""


def _os_error(code: int | None, text: str) -> OSError:
    """An OSError for explain(): the bare errno message when there is an errno."""
    return OSError(code or 0, os.strerror(code) if code else text)


def _has_sys_admin() -> bool:
    return bool(capabilities().get("CapEff", 0) >> _CAP_SYS_ADMIN & 1)


def _seccomp_refused(reason: str) -> tuple[str, str]:
    """Return *reason* with the seccomp filter as its cause, and that filter's fix."""
    cause, fix = seccomp_refusal()
    return f"{reason}: {cause}", fix


def _userns_diagnosis(text: str, code: int | None) -> tuple[str, str]:
    cause, fix = userns_refusal(code)
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
        return _seccomp_refused(failure.reason)
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
        return _seccomp_refused(failure.reason)
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
    return (f"no cgroup for limits: {where}; {CGROUP_FALLBACK}",
            "for kernel-enforced limits use cgroup v2 with memory and pids delegated "
            "(systemd Delegate=yes, or +memory +pids in the parent's cgroup.subtree_control), "
            "or give the container a writable cgroup (--cgroupns=private, --privileged)")


def diagnose(layer: str, who: IdentityKind, report: dict[str, Any],
              version: str) -> tuple[str, str | None]:
    """Return the reason and the fix for a failed probe."""
    if report.get("reason"):
        return str(report["reason"]), report.get("fix") or None
    stage, code, error = str(report["stage"]), report.get("errno"), str(report["error"])
    text = f"{stage}: {os.strerror(code) if code else error}"
    if stage == "create a cgroup" and code is None:
        return _cgroup_diagnosis(version)
    if stage == DROP:
        return (f"cannot test the non-root path ({text})",
                "run `buildjail doctor` as the non-root user")
    if stage in (USERNS, USERNS_MAP, ROOT_USERNS):
        return _userns_diagnosis(text, code)
    if stage.startswith("unshare "):
        return _unshare_diagnosis(stage.split()[1], text, code, who)
    if stage == "mount proc":
        return _proc_diagnosis(text, code)
    return _generic_diagnosis(layer, stage, text, code, error)


def _generic_diagnosis(layer: str, stage: str, text: str, code: int | None,
                       error: str) -> tuple[str, str]:
    if code in (errno.EPERM, errno.EACCES) and seccomp_mode() == 2:
        return _seccomp_refused(text)
    if stage == "build the seccomp filter":
        return (f"no seccomp filter for this machine ({error})",
                "run on x86_64 or aarch64, or set isolation.seccomp = false in the policy")
    failure = explain("seccomp" if "seccomp" in stage else stage, _os_error(code, error))
    fix = failure.fix
    if "buildjail doctor" in fix:
        fix = (f"no known fix: please report it with the output of `buildjail doctor --json` "
               f"(kernel {os.uname().release})")
    return f"{layer} failed at {failure.reason}", fix


