"""``buildjail doctor``: probe, layer by layer, what this host can enforce as root and non-root.

Every layer is checked by doing it for real in a forked child that reports
through a pipe and exits, so nothing (namespace, mount, cgroup) outlives the
check. Sysctls and ``/proc`` are read only to explain a failure and its fix.
"""

from __future__ import annotations

from .command import main
from .host import check_host
from .layers import LAYERS
from .render import render_table
from .report import IDENTITIES, HostReport, IdentityKind, LayerCheck

__all__ = [
    "IDENTITIES",
    "LAYERS",
    "HostReport",
    "IdentityKind",
    "LayerCheck",
    "check_host",
    "main",
    "render_table",
]
