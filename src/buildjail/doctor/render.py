"""Render a host report as the human-readable table ``buildjail doctor`` prints."""

from __future__ import annotations

from ..backends import BACKENDS
from .layers import LAYERS
from .report import HostReport, IdentityKind, LayerCheck


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


