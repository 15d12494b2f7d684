"""``buildjail audit``: real attack probes against each profile and backend, on this host."""

from __future__ import annotations

from .runner import AuditError, AuditReport, Finding, SandboxStatus, run_audit

__all__ = ["AuditError", "AuditReport", "Finding", "SandboxStatus", "run_audit"]
