"""``buildjail audit``: every probe fires without a sandbox, and none gets through ``full``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from buildjail.audit import AuditReport, run_audit
from buildjail.audit.vectors import VECTORS
from buildjail.backends.bwrap import find_bwrap
from conftest import require_backend

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")

NOT_ON_THIS_HOST = {
    "tiocsti": "hooks get /dev/null as stdin: no terminal is reachable from any profile",
}
"""Vectors that cannot succeed on this host whatever the profile, and why."""

NETWORK_BLOCKS = {"net_tcp", "net_udp", "net_dns", "host_loopback", "abstract_socket",
                  "hostname"}
"""What fromager's --network-isolation blocks: the network rows and the hostname (abstract
unix sockets belong to the network namespace, so they are blocked too)."""


BACKENDS = ["native", "bwrap"]


@pytest.fixture(scope="module")
def report() -> AuditReport:
    """One audit of the three profiles on both backends (the slow part, done once)."""
    installed = [name for name in BACKENDS if name != "bwrap" or find_bwrap() is not None]
    return run_audit(["none", "network", "full"], installed)


def _verdicts(report: AuditReport, profile: str, backend: str) -> dict[str, Any]:
    require_backend(backend)
    return {f.vector: f for f in report.findings
            if f.profile == profile and f.backend == backend}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vector", [v.id for v in VECTORS])
def test_full_blocks_every_probe(report: AuditReport, vector: str, backend: str) -> None:
    finding = _verdicts(report, "full", backend)[vector]
    assert finding.verdict in ("blocked", "not_applicable"), finding
    if finding.verdict == "not_applicable":
        assert finding.evidence, "a not-applicable cell must say why"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vector", [v.id for v in VECTORS if v.id not in NOT_ON_THIS_HOST])
def test_without_a_sandbox_every_probe_fires(report: AuditReport, vector: str,
                                             backend: str) -> None:
    """Each probe really detects what it claims: under ``none`` the attack succeeds."""
    finding = _verdicts(report, "none", backend)[vector]
    assert finding.verdict == "vulnerable", finding


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vector", [v.id for v in VECTORS if v.id not in NOT_ON_THIS_HOST])
def test_network_profile_matches_fromagers_network_isolation(report: AuditReport,
                                                             vector: str, backend: str) -> None:
    finding = _verdicts(report, "network", backend)[vector]
    expected = "blocked" if vector in NETWORK_BLOCKS else "vulnerable"
    assert finding.verdict == expected, finding


def test_json_is_stable(report: AuditReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) >= {"findings", "profiles", "backends", "host", "vectors"}
    assert len(data["findings"]) == 3 * len(VECTORS) * len(report.backends)
    for finding in data["findings"]:
        assert set(finding) == {"vector", "profile", "backend", "verdict", "evidence"}
        assert finding["verdict"] in ("blocked", "vulnerable", "not_applicable")


def _host_state() -> dict[str, Any]:
    def listing(path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    with open("/proc/sysvipc/shm") as stream:
        shm = sorted(line.split()[1] for line in stream.readlines()[1:])
    with open("/etc/passwd") as stream:
        passwd = stream.read()
    processes = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True,
                               check=True).stdout
    return {
        "etc": listing("/etc"), "home": listing("/home"), "run": listing("/run"),
        "run_secrets": listing("/run/secrets"), "dev_shm": listing("/dev/shm"),
        "tmp": [name for name in listing("/tmp") if "bj-audit" in name],
        "var_lib": [name for name in listing("/var/lib") if name.startswith("buildjail-audit")],
        "shm": shm, "passwd": passwd,
        "sleepers": processes.count("/bin/sleep 3600"),
    }


def test_the_audit_leaves_the_host_as_it_found_it(report: AuditReport) -> None:
    before = _host_state()
    run_audit(["none"], ["native"])
    assert _host_state() == before


def test_an_interrupted_audit_leaves_nothing_behind() -> None:
    before = _host_state()
    proc = subprocess.Popen([sys.executable, "-m", "buildjail", "audit", "--profile", "none",
                             "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd="/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            name.startswith("bj-audit") for name in os.listdir("/dev/shm")):
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the probe build
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    time.sleep(0.5)
    assert _host_state() == before


def test_cli_exit_code_gates_on_full(tmp_path: Path) -> None:
    require_backend("bwrap")
    proc = subprocess.run([sys.executable, "-m", "buildjail", "audit", "--profile", "full",
                           "--backend", "native", "--backend", "bwrap"],
                          capture_output=True, text=True, timeout=600, check=False, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header == ["vector", "full/native", "full/bwrap"], header  # one table, both
    assert "full/native: 0 vulnerable" in proc.stdout
    assert "full/bwrap: 0 vulnerable" in proc.stdout


def test_the_probe_projects_copies_of_the_protocol_match() -> None:
    """The probe project is standalone (it runs under any interpreter) and copies constants."""
    import importlib.util

    from buildjail.audit.runner import PROBE_PROJECT, SEPARATE_BUILDS
    from buildjail.audit.vectors import CONFIG_FILE, PROBE_MARKER

    spec = importlib.util.spec_from_file_location("probes", PROBE_PROJECT / "probes.py")
    assert spec is not None and spec.loader is not None
    probes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probes)
    assert probes.MARKER == PROBE_MARKER
    assert probes.CONFIG_FILE == CONFIG_FILE
    assert set(probes.REQUIRES_VECTORS) | set(probes.BUILD_VECTORS) == {v.id for v in VECTORS}
    assert set(probes.BUILD_VECTORS) == set(SEPARATE_BUILDS)
