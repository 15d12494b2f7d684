"""The sandbox's hostname: its own in a new UTS namespace, or the container's, reported degraded.

Podman's default seccomp profile allows ``sethostname`` only to containers with
CAP_SYS_ADMIN, even inside a UTS namespace of their own. There the sandbox keeps the
container's hostname — the container's, not the host's — and says so as a degraded layer.
Outside a container a refused ``sethostname`` would show the host's own name: that fails
closed.
"""

from __future__ import annotations

import errno
import functools
import os
import socket

from ..errors import SandboxSetupError
from . import container, userns
from . import kernel as k
from .procfs import seccomp_mode

DEGRADED_LAYER = "hostname:degraded"


@functools.cache
def sethostname_refused() -> bool:
    """Whether ``sethostname`` fails with EPERM in a fresh UTS namespace of this process's.

    Only a seccomp filter refuses it where the namespace can be made, so without one this
    asks nothing; with one, a child finds out once per process.
    """
    if seccomp_mode() != 2:
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a child that never returns
        os._exit(_try_sethostname())
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1


def _try_sethostname() -> int:
    """In a child: 0 when sethostname works in a new UTS namespace, 1 on EPERM, 2 otherwise."""
    try:
        if userns.needs_user_namespace():
            userns.unshare_user(k.CLONE_NEWUTS, all_ids=False)
        else:
            k.unshare(k.CLONE_NEWUTS)
        socket.sethostname("localhost")
    except OSError as error:
        return 1 if error.errno == errno.EPERM and "unshare" not in str(error) else 2
    except BaseException:
        return 2
    return 0


INITIAL_UTS_NAMESPACE = "uts:[4026531838]"
"""The host's own UTS namespace: the kernel gives each initial namespace a fixed inode."""


def in_the_hosts_uts_namespace() -> bool:
    """Whether this process shares the host's own UTS namespace (its hostname)."""
    try:
        return os.readlink("/proc/self/ns/uts") == INITIAL_UTS_NAMESPACE
    except OSError:
        return True  # cannot tell: assume the worst


def plan_hostname(name: str) -> tuple[str | None, str | None]:
    """The hostname to set in the sandbox, or None and why the container's is kept.

    Raises SandboxSetupError when the name cannot be set and this is not a container.
    """
    if not sethostname_refused():
        return name, None
    found = container.detect()
    if found is None:
        raise SandboxSetupError(
            "sethostname is refused in the sandbox's UTS namespace (a seccomp filter), and "
            "this is not a container: the build would see this host's name",
            "allow sethostname in this process's seccomp profile, or leave the uts "
            "namespace out of the policy (isolation.namespaces)")
    if in_the_hosts_uts_namespace():
        raise SandboxSetupError(
            f"sethostname is refused in the sandbox's UTS namespace, and this {found.title} "
            "container shares the host's (--uts=host, hostNetwork): its name is the host's",
            "give the container a UTS namespace of its own (podman/docker: drop --uts=host; "
            "Kubernetes: hostNetwork: false), or allow sethostname in its seccomp profile")
    return None, (f"{found.title}'s seccomp profile refuses sethostname to a container "
                  f"without CAP_SYS_ADMIN: the build sees the container's own hostname "
                  f"({socket.gethostname()}), not the host's")
