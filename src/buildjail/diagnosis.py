"""Turn a failed kernel call during sandbox set-up into a one-line reason and its fix."""

from __future__ import annotations

import errno
import os

from .errors import SandboxSetupError


def read_setting(path: str) -> str | None:
    """Return a small file's stripped text (a sysctl, a /proc entry), or None if unreadable."""
    try:
        with open(path) as stream:
            return stream.read().strip()
    except OSError:
        return None


def seccomp_mode() -> int:
    """Return this process's seccomp mode (0 none, 1 strict, 2 filter)."""
    for line in (read_setting("/proc/self/status") or "").splitlines():
        if line.startswith("Seccomp:"):
            return int(line.split()[1])
    return 0


def userns_fix() -> str:
    """Explain how to enable unprivileged user namespaces on this host."""
    if read_setting("/proc/sys/user/max_user_namespaces") == "0":
        return "sysctl -w user.max_user_namespaces=15000 (it is 0 on this host), or run as root"
    if read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("Ubuntu's AppArmor forbids unprivileged user namespaces: "
                "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor "
                "profile allowing 'userns' for this Python, or run as root")
    if read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return "sysctl -w kernel.unprivileged_userns_clone=1, or run as root"
    if seccomp_mode() == 2:
        return ("this process runs under a seccomp filter (e.g. Docker's default profile) "
                "that forbids namespaces: run the container with --security-opt "
                "seccomp=unconfined or a profile allowing unshare/clone with CLONE_NEW*")
    return "run as root, or enable unprivileged user namespaces in the kernel"


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
        if os.geteuid() != 0 or seccomp_mode() == 2:
            return SandboxSetupError(f"cannot create namespaces ({text})", userns_fix())
        return SandboxSetupError(
            f"cannot create namespaces ({text})",
            "run buildjail with CAP_SYS_ADMIN (a privileged container) or as a user "
            "allowed to create user namespaces",
        )
    if stage.startswith("mount proc") and code in (errno.EPERM, errno.EACCES):
        return SandboxSetupError(
            f"cannot mount a fresh /proc ({text})",
            "the container masks parts of /proc (e.g. Docker/Podman's masked paths): run it "
            "with an unmasked /proc (podman --security-opt unmask=/proc/*, docker "
            "--security-opt systempaths=unconfined) or use a profile without the pid namespace",
        )
    if code == errno.ENOSYS:
        return SandboxSetupError(
            f"the kernel lacks an interface buildjail needs ({text})",
            "use Linux >= 5.12 (mount_setattr), or the bwrap backend",
        )
    if stage.startswith("seccomp"):
        return SandboxSetupError(f"cannot install the seccomp filter ({text})",
                                 "use a kernel built with CONFIG_SECCOMP_FILTER")
    return SandboxSetupError(text, "run `buildjail doctor` to see what this host can enforce")
