"""Probe every layer as each identity and gather the host's facts into a report."""

from __future__ import annotations

import dataclasses
import os
import sys

from .._linux import cgroups, container, userns
from .._linux.procfs import read_setting, seccomp_mode
from ..backends import choose_backend
from .child import Layer, run_probe
from .diagnose import CGROUP_FALLBACK, diagnose
from .layers import LAYER_PROBES
from .report import IDENTITIES, HostReport, IdentityKind, LayerCheck


def _read_int(path: str) -> int | None:
    text = read_setting(path)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


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


def _check(layer: Layer, who: IdentityKind, version: str) -> LayerCheck:
    required = who in layer.required or (
        layer.name == "namespace:user" and os.geteuid() == 0 and userns.contained_root())
    if who == "root" and os.geteuid() != 0:
        return LayerCheck(layer.name, who, False, "not checked (run as root)",
                          required=required, checked=False, backend=layer.backend)
    if layer.name == "limits:cgroup" and who == "nonroot":
        return LayerCheck(layer.name, who, False, "rlimits + in-sandbox monitor",
                          "buildjail creates cgroups only as root; " + CGROUP_FALLBACK,
                          "nothing to do; run as root for kernel-enforced cgroup limits",
                          required=required)
    report = run_probe(layer, who)
    if report["ok"]:
        degraded = report.get("degraded")
        return LayerCheck(layer.name, who, True, str(report["detail"]),
                          str(degraded) if degraded else None,
                          str(report["fix"]) if degraded else None, required=required,
                          backend=layer.backend, degraded=bool(degraded))
    reason, fix = diagnose(layer.name, who, report, version)
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
    checks = [_check(layer, who, version) for who in IDENTITIES for layer in LAYER_PROBES]
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


