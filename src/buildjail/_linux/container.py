"""The container this process runs in, and the options that give the sandbox what it needs there.

Every fix buildjail prints for a layer a container refuses comes from here, so the run's
error, the doctor and the README say the same thing for the same runtime.
"""

from __future__ import annotations

import functools
import os

from .procfs import read_setting

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from .._records import NamedTuple

PODMAN_UNMASK = "--security-opt unmask=/proc/*"
DOCKER_UNMASK = "--security-opt systempaths=unconfined"
DOCKER_SECCOMP = "--security-opt seccomp=unconfined"
DOCKER_APPARMOR = "--security-opt apparmor=unconfined"
POD_UNMASK = "securityContext.procMount: Unmasked (it needs the pod's hostUsers: false)"
POD_SECCOMP = "securityContext.seccompProfile: {type: Unconfined}"
_HARMLESS_PROC_MOUNTS = ("/proc/sys/fs/binfmt_misc",)
_TITLES = {"podman": "Podman", "docker": "Docker", "kubernetes": "Kubernetes",
           "containerd": "containerd", "lxc": "LXC"}


class Container(NamedTuple):
    """A container runtime this process was found in, and how it was recognised."""

    runtime: str
    """``podman``, ``docker``, ``kubernetes`` or another engine's name."""
    evidence: str
    root_outside: int | None = None
    """The id this namespace's root has outside it (0: a rootful container without a user
    namespace; rootless podman, ``--userns=auto``, ``hostUsers: false``: another), if mapped."""

    @property
    def title(self) -> str:
        """The runtime's name as written in prose: Podman, Docker, Kubernetes..."""
        return _TITLES.get(self.runtime, self.runtime)

    def describe(self) -> str:
        """A short description, e.g. ``podman (rootless; /run/.containerenv)``."""
        if self.root_outside is None:
            mode = "root unmapped; "
        elif self.root_outside == 0:
            mode = "root is the host's root; "
        else:
            mode = f"in a user namespace, root is uid {self.root_outside} outside; "
        return f"{self.runtime} ({mode}{self.evidence})"


@functools.cache
def detect() -> Container | None:
    """The container runtime this process runs in, or None on a host (as far as it shows).

    A runtime's marker file counts only with the runtime's own mounts beside it: a host
    made from a container image keeps a stale ``/.dockerenv``, but not the bind mounts a
    runtime puts on ``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf``.
    """
    found = _runtime()
    if found is None:
        return None
    return Container(found[0], found[1], _root_outside())


def _runtime() -> tuple[str, str] | None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes", "KUBERNETES_SERVICE_HOST is set"
    mounts = _mount_roots()
    if "/run/.containerenv" in mounts:
        return "podman", "/run/.containerenv"
    if os.path.exists("/.dockerenv") and "/containers/" in mounts.get("/etc/hostname", ""):
        return "docker", "/.dockerenv, /etc/hostname from the engine's storage"
    cgroups = read_setting("/proc/1/cgroup") or ""
    for hint, runtime in (("kubepods", "kubernetes"), ("libpod", "podman"),
                          ("docker", "docker"), ("containerd", "containerd"), ("lxc", "lxc")):
        if hint in cgroups:
            return runtime, f"/proc/1/cgroup mentions {hint}"
    return None


def _root_outside() -> int | None:
    """The outside id of uid 0 in this process's user namespace, from its uid_map."""
    for line in (read_setting("/proc/self/uid_map") or "").splitlines():
        inside, outside, count = (int(part) for part in line.split())
        if inside <= 0 < inside + count:
            return outside - inside
    return None


def _mount_roots() -> dict[str, str]:
    """Mount point -> the path of the mounted tree, for single files a runtime binds in."""
    wanted = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/run/.containerenv")
    roots = {}
    for line in (read_setting("/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in wanted:
            roots[fields[4]] = fields[3]
    return roots


def proc_overmounts() -> tuple[str, ...]:
    """Paths under /proc that something mounted over (a runtime's masks and read-only paths)."""
    found = []
    for line in (read_setting("/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4].startswith("/proc/") and (
                fields[4] not in _HARMLESS_PROC_MOUNTS):
            found.append(fields[4])
    return tuple(found)


def apparmor_profile() -> str | None:
    """This process's AppArmor profile when one confines it (e.g. ``docker-default``)."""
    for path in ("/proc/self/attr/apparmor/current", "/proc/self/attr/current"):
        text = read_setting(path)
        if text and text != "unconfined" and "(" in text:
            return text.split(" (", 1)[0]
    return None


def unmask_proc_fix(container: Container | None) -> str:
    """How to give this container a /proc the kernel lets a sandbox mount afresh."""
    runtime = container.runtime if container else None
    if runtime == "podman":
        return (f"run the container with {PODMAN_UNMASK} (in a pod spec for podman kube play "
                f"or Kubernetes: {POD_UNMASK}; podman honours it from 4.7)")
    if runtime == "docker":
        return f"run the container with {DOCKER_UNMASK}"
    if runtime == "kubernetes":
        return f"set {POD_UNMASK} in the pod spec"
    return ("give the container an unmasked /proc (podman: " + PODMAN_UNMASK + "; docker: "
            + DOCKER_UNMASK + "; Kubernetes: " + POD_UNMASK + ")")


def namespaces_fix(container: Container | None) -> str | None:
    """The fix when this container's seccomp profile refuses namespaces, if the runtime is known.

    Docker's (and containerd's) default profile allows ``unshare`` and namespace flags only
    with CAP_SYS_ADMIN; podman's allows them. Unconfining the container's seccomp leaves
    buildjail's own filter on the build.
    """
    runtime = container.runtime if container else None
    if runtime == "docker":
        options = [DOCKER_SECCOMP]
        if proc_overmounts():
            options.append(DOCKER_UNMASK)
        if apparmor_profile():
            options.append(DOCKER_APPARMOR)
        return (f"run the container with {' '.join(options)} (buildjail still puts its own "
                "seccomp filter on every build)")
    if runtime in ("kubernetes", "containerd"):
        fix = f"set {POD_SECCOMP} in the pod spec"
        if proc_overmounts():
            fix += f" and {POD_UNMASK}"
        return fix + " (buildjail still puts its own seccomp filter on every build)"
    return None


def hostname_fix(container: Container | None) -> str:
    """How to let the sandbox name itself ``localhost`` where the runtime keeps its own name.

    Nothing is needed for the isolation: the build sees the container's hostname, not the
    host's. Podman's default seccomp profile allows sethostname only with CAP_SYS_ADMIN.
    """
    runtime = container.runtime if container else ""
    where = {"podman": f"run the container with {DOCKER_SECCOMP}",
             "docker": f"run the container with {DOCKER_SECCOMP}",
             "kubernetes": f"set {POD_SECCOMP} in the pod spec"}.get(
                 runtime, "allow sethostname in the container's seccomp profile")
    return (f"none needed; for the name localhost, {where} (buildjail still puts its own "
            "seccomp filter on every build)")
