"""The audit's findings as a table for people, or as stable JSON for CI jobs."""

from __future__ import annotations

import json
from typing import TextIO

from .runner import AuditReport, SandboxStatus
from .vectors import VECTORS

_LABELS = {"blocked": "Blocked", "vulnerable": "VULNERABLE", "not_applicable": "n/a",
           "degraded": "degraded", "error": "ERROR"}


def print_table(report: AuditReport, stream: TextIO, evidence: bool = True) -> None:
    """Print whether each sandbox was set up, vector x profile/backend → verdict, the evidence."""
    columns = [(profile, backend) for backend in report.backends for profile in report.profiles]
    for status in report.sandboxes:
        print(_sandbox_line(status), file=stream)
    cells = {(f.vector, f.profile, f.backend): f for f in report.findings}
    width = max(len(vector.id) for vector in VECTORS) + 2
    header = "".join(f"{profile + '/' + backend:>18}" for profile, backend in columns)
    print(f"{'vector':{width}}{header}", file=stream)
    for vector in VECTORS:
        row = "".join(
            f"{_LABELS.get(cells[(vector.id, p, b)].verdict, '?') if (vector.id, p, b) in cells else '-':>18}"  # noqa: E501
            for p, b in columns)
        print(f"{vector.id:{width}}{row}", file=stream)
    for profile, backend in columns:
        print(f"{profile}/{backend}: {_counts(report, profile, backend)}", file=stream)
    if evidence:
        print("\nevidence:", file=stream)
        for finding in report.findings:
            print(f"  {finding.vector} [{finding.profile}/{finding.backend}] "
                  f"{_LABELS[finding.verdict]}: {finding.evidence}", file=stream)
    for error in report.errors:
        print(f"note: {error}", file=stream)


def _sandbox_line(status: SandboxStatus) -> str:
    where = f"sandbox {status.profile}/{status.backend}"
    if not status.set_up:
        return f"{where}: NOT SET UP, every probe is an error: {status.error}"
    if status.degraded:
        weaker = "; ".join(f"{layer}: {why}" for layer, why in sorted(status.degraded.items()))
        return f"{where}: set up, degraded layers: {weaker}"
    return f"{where}: set up"


def _counts(report: AuditReport, profile: str, backend: str) -> str:
    verdicts = [f.verdict for f in report.findings
                if (f.profile, f.backend) == (profile, backend)]
    text = f"{verdicts.count('vulnerable')} vulnerable"
    for verdict in ("error", "degraded"):
        if verdict in verdicts:
            text += f", {verdicts.count(verdict)} {verdict}"
    return text


def print_json(report: AuditReport, stream: TextIO) -> None:
    """Print the report as JSON (``findings``: vector, profile, backend, verdict, evidence)."""
    json.dump(report.to_dict(), stream, indent=2)
    stream.write("\n")
