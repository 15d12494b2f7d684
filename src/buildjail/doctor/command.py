"""The ``buildjail doctor`` command: check the host, print the report, exit 0 if ``full`` works."""

from __future__ import annotations

import json
import os
import time

from .host import check_host
from .render import render_table
from .report import IdentityKind


def main(json_output: bool = False) -> int:
    """Run the checks, print them; return 0 if ``full`` works with the ``auto`` backend."""
    start = time.monotonic()
    report = check_host()
    if json_output:
        data = report.to_dict()
        data["duration"] = round(time.monotonic() - start, 3)
        print(json.dumps(data, indent=2))
    else:
        print(render_table(report))
    current: IdentityKind = "root" if os.geteuid() == 0 else "nonroot"
    return 0 if report.can_enforce(current, report.auto[0]) else 1
