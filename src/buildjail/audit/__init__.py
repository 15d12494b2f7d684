"""``buildjail audit``: real attack probes against each profile and backend, on this host."""

from __future__ import annotations

from .runner import AuditReport, Finding, run_audit

__all__ = ["AuditReport", "Finding", "run_audit"]
