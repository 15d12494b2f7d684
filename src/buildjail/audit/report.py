"""The audit's findings as a table for people, or as stable JSON for CI jobs."""

from __future__ import annotations

import json
from typing import TextIO

from .. import attempts
from .runner import AuditReport, SandboxStatus
from .vectors import VECTORS

_LABELS = {"blocked": "Blocked", "vulnerable": "VULNERABLE", "not_applicable": "n/a",
           "degraded": "degraded", "error": "ERROR"}


def print_table(report: AuditReport, stream: TextIO, evidence: bool = False) -> None:
    """Print the evidence (if asked), the sandboxes and notes, then the table and summary."""
    if evidence:
        print("evidence:", file=stream)
        for finding in report.findings:
            print(f"  {finding.vector} [{finding.profile}/{finding.backend}] "
                  f"{_LABELS[finding.verdict]}: {finding.evidence}", file=stream)
    for status in report.sandboxes:
        print(_sandbox_line(status), file=stream)
    for error in report.errors:
        print(f"note: {error}", file=stream)
    _print_verdicts(report, stream)
    print(summary(report), file=stream)


def _print_verdicts(report: AuditReport, stream: TextIO) -> None:
    """The table: one row per vector, one column per profile/backend."""
    columns = _columns(report)
    cells = {(f.vector, f.profile, f.backend): f.verdict for f in report.findings}
    width = max(len(vector.id) for vector in VECTORS) + 2
    header = "".join(f"{profile + '/' + backend:>18}" for profile, backend in columns)
    print(f"{'vector':{width}}{header}", file=stream)
    for vector in VECTORS:
        row = "".join(f"{_label(cells.get((vector.id, p, b))):>18}" for p, b in columns)
        print(f"{vector.id:{width}}{row}", file=stream)


def summary(report: AuditReport) -> str:
    """One line: the counts of every column, and whether ``full`` passed."""
    counts = "; ".join(f"{profile}/{backend}: {_counts(report, profile, backend)}"
                       for profile, backend in _columns(report))
    if "full" not in report.profiles:
        return counts
    if report.failed("full"):
        return f"{counts} (full FAILED: an attack got through or was not judged)"
    return f"{counts} (full: no attack got through)"


def _columns(report: AuditReport) -> list[tuple[str, str]]:
    return [(profile, backend) for backend in report.backends for profile in report.profiles]


def _label(verdict: str | None) -> str:
    return "-" if verdict is None else _LABELS.get(verdict, "?")


def _sandbox_line(status: SandboxStatus) -> str:
    where = f"sandbox {status.profile}/{status.backend}"
    if not status.set_up:
        return f"{where}: NOT SET UP, every probe is an error: {status.error}"
    tried = attempts.summary(attempts.from_json(list(status.attempts)), status.attempts_omitted)
    tried = f"; {tried}" if tried else ""
    if status.degraded:
        weaker = "; ".join(f"{layer}: {why}" for layer, why in sorted(status.degraded.items()))
        return f"{where}: set up, degraded layers: {weaker}{tried}"
    return f"{where}: set up{tried}"


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
