"""What the doctor found: the outcome of one layer check, and the report over the host."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..backends import BACKENDS

IdentityKind = Literal["root", "nonroot"]
"""Who a check is for: root (ephemeral uid) or non-root (user namespace)."""

IDENTITIES: tuple[IdentityKind, ...] = ("root", "nonroot")
"""Both identities, in the order the report shows them."""


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

