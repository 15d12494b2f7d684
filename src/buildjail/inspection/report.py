"""What ``buildjail inspect`` prints: a findings table per wheel, or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from ..attempts import FIRST, from_json
from ..escaping import escape_controls
from . import Step, WheelReport

_KINDS = {"install": "install", "import": "import", "entry_point": "entry point"}


def print_json(reports: Sequence[WheelReport], stream: TextIO) -> None:
    """The reports as one JSON document: ``{"wheels": [...], "clean": bool}`` (``clean``:
    every wheel's verdict is, the exit code 0)."""
    json.dump({"wheels": [report.to_dict() for report in reports],
               "clean": all(report.verdict == "clean" for report in reports)},
              stream, indent=2)
    stream.write("\n")


def print_table(reports: Sequence[WheelReport], stream: TextIO) -> None:
    """One block per wheel: its verdict, each step, each suspicious attempt."""
    for report in reports:
        stream.write("\n".join(table_lines(report)) + "\n\n")


def table_lines(report: WheelReport) -> list[str]:
    """The lines of one wheel's block (every value from the wheel shown escaped)."""
    title = f"{report.name} {report.version}" if report.name else report.wheel
    lines = [f"{escape_controls(title)} ({escape_controls(report.wheel)}): "
             f"{report.verdict.upper()}"]
    width = max([len(_step_label(step)) for step in report.steps] + [10])
    lines += [f"  {_step_label(step):<{width}}  {_step_result(step)}" for step in report.steps]
    for item in sorted(from_json(report.findings), key=lambda item: item.kind not in FIRST):
        lines.append(f"  {'tried':<{width}}  {escape_controls(item.describe())}")
    for kind, count in sorted(report.attempts_omitted.items()):
        lines.append(f"  {'tried':<{width}}  {count} more {kind} attempts (not named)")
    for key, why in sorted(report.unrecorded.items()):
        lines.append(f"  {'not seen':<{width}}  {key}: {why}")
    lines += [f"  {'incomplete':<{width}}  {escape_controls(why)}" for why in report.incomplete]
    if report.verdict == "clean":
        lines.append(f"  {'tried':<{width}}  nothing suspicious")
    return lines


def _step_label(step: Step) -> str:
    label = _KINDS.get(step.kind, step.kind)
    return f"{label} {step.name} --help" if step.kind == "entry_point" else (
        f"{label} {step.name}".rstrip())


def _step_result(step: Step) -> str:
    return "ok" if step.ok else f"failed: {step.detail}" if step.detail else "failed"
