"""Turn a failed kernel call during sandbox set-up into a one-line reason and its fix."""

from __future__ import annotations

import errno
import os

from ..errors import SandboxSetupError
from . import container
from .procfs import read_setting, seccomp_mode

_GENERIC_SECCOMP_CAUSE = ("this process runs under a seccomp filter (seccomp mode 2) that "
                          "forbids it")
_GENERIC_SECCOMP_FIX = ("run it without that filter (containers: --security-opt "
                        "seccomp=unconfined), or with a profile allowing unshare, clone with "
                        "CLONE_NEW* and mount")


def seccomp_refusal() -> tuple[str, str]:
    """Return why a seccomp filter on this process refuses namespaces, and the fix."""
    found = container.detect()
    fix = container.namespaces_fix(found)
    if found is not None and fix is not None:
        return (f"{found.title}'s default seccomp profile refuses it to a container without "
                "CAP_SYS_ADMIN", fix)
    return _GENERIC_SECCOMP_CAUSE, _GENERIC_SECCOMP_FIX


def userns_refusal(code: int | None = None) -> tuple[str, str]:
    """Return why this host refuses an unprivileged user namespace (errno *code*), and the fix."""
    limit = read_setting("/proc/sys/user/max_user_namespaces")
    if limit == "0":
        return ("user.max_user_namespaces is 0 (user namespaces are disabled)",
                "sysctl -w user.max_user_namespaces=15000 (it is 0 on this host), or run as root")
    if code == errno.ENOSPC:
        return (f"the user namespace limit is reached (user.max_user_namespaces={limit})",
                "raise the limit: sysctl -w user.max_user_namespaces=15000")
    if read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("Ubuntu's AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns=1)",
                "Ubuntu's AppArmor forbids unprivileged user namespaces: "
                "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor "
                "profile allowing 'userns' for this Python, or run as root")
    if read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return ("kernel.unprivileged_userns_clone is 0",
                "sysctl -w kernel.unprivileged_userns_clone=1, or run as root")
    if seccomp_mode() == 2:
        return seccomp_refusal()
    fix = "run as root, or enable unprivileged user namespaces in the kernel"
    if code == errno.EINVAL:
        return "the kernel was built without user namespaces (CONFIG_USER_NS)", fix
    return "the kernel refused an unprivileged user namespace", fix


def explain_error(error: OSError) -> SandboxSetupError:
    """Explain an error raised as ``OSError(errno, "<stage>: <details>")`` during set-up."""
    stage, _, detail = (error.strerror or "").partition(": ")
    if not detail:
        return explain(str(error), error)
    return explain(stage, OSError(error.errno or 0, detail))


def explain(stage: str, error: OSError) -> SandboxSetupError:
    """Return the set-up error for *error*, raised while doing *stage*."""
    code = error.errno or 0
    text = f"{stage}: {error.strerror or error}"
    if stage.startswith("unshare") and code in (errno.EPERM, errno.ENOSPC, errno.EINVAL):
        return _namespaces_refused(text, code)
    if stage.startswith("mount proc") and code in (errno.EPERM, errno.EACCES):
        return _proc_refused(text)
    if code == errno.ENOSYS:
        return SandboxSetupError(
            f"the kernel lacks an interface buildjail needs ({text})",
            "use Linux >= 5.12 (mount_setattr), or the bwrap backend",
        )
    if stage.startswith("seccomp"):
        return SandboxSetupError(f"cannot install the seccomp filter ({text})",
                                 "use a kernel built with CONFIG_SECCOMP_FILTER")
    return SandboxSetupError(text, "run `buildjail doctor` to see what this host can enforce")


def _namespaces_refused(text: str, code: int) -> SandboxSetupError:
    if code == errno.EPERM and seccomp_mode() == 2:
        cause, fix = seccomp_refusal()
        return SandboxSetupError(f"cannot create namespaces ({text}): {cause}", fix)
    if os.geteuid() != 0:
        return SandboxSetupError(f"cannot create namespaces ({text})", userns_refusal(code)[1])
    return SandboxSetupError(
        f"cannot create namespaces ({text})",
        "run buildjail as root with CAP_SYS_ADMIN, or as root or a user allowed to create "
        "user namespaces (buildjail then creates the others inside one)")


def _proc_refused(text: str) -> SandboxSetupError:
    found = container.detect()
    masked = container.proc_overmounts()
    where = f"{found.title} masks parts of /proc" if found else "parts of /proc are masked"
    shown = ", ".join(masked[:4]) + (", ..." if len(masked) > 4 else "")
    if masked:
        return SandboxSetupError(
            f"cannot mount a fresh /proc for the sandbox's pid namespace ({text}): {where} "
            f"(over-mounted: {shown}), and the kernel allows a new /proc in a user namespace "
            "only where the whole /proc is visible", container.unmask_proc_fix(found))
    return SandboxSetupError(
        f"cannot mount a fresh /proc for the sandbox's pid namespace ({text})",
        f"{container.unmask_proc_fix(found)}, or use a profile without the pid namespace")
