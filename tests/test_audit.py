"""``buildjail audit``: every probe fires without a sandbox, and none gets through ``full``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail.audit import AuditReport, run_audit, runner
from buildjail.audit.runner import VERDICTS, _Context, _verdict
from buildjail.audit.vectors import VECTORS
from buildjail.backends.bwrap import find_bwrap
from conftest import host_address, require_backend

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")

NOT_ON_THIS_HOST: dict[str, str] = {}
"""Vectors that cannot succeed on this host whatever the profile, and why (none: the
terminal probe attacks the audit's own pty, see test_audit_terminal.py)."""

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
    assert set(data) >= {"findings", "sandboxes", "profiles", "backends", "host", "vectors"}
    assert len(data["findings"]) == 3 * len(VECTORS) * len(report.backends)
    for finding in data["findings"]:
        assert set(finding) == {"vector", "profile", "backend", "verdict", "evidence"}
        assert finding["verdict"] in VERDICTS
    assert len(data["sandboxes"]) == 3 * len(report.backends)
    for status in data["sandboxes"]:
        assert set(status) == {"profile", "backend", "set_up", "error", "layers", "degraded",
                               "attempts", "attempts_omitted"}
        assert status["set_up"] is True and status["error"] is None, status
        assert status["degraded"] == {}, status  # nothing is degraded on this host


PROBE_ATTEMPTS = [{"kind": "credential", "path": path} for path in (
    "~/.netrc", "~/.ssh/id_ed25519", "~/.aws/credentials", "~/.docker/config.json")] + [
    {"kind": "dns", "name": "pypi.org"}]
"""What the probe project tries that ``full`` records: its credential probes read $HOME's
files (the sandbox's decoys), its DNS probe resolves pypi.org."""


def _attempts_by_sandbox(data: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, str]]]:
    return {(status["profile"], status["backend"]): sorted(
        status["attempts"], key=lambda item: sorted(item.items()))
        for status in data["sandboxes"]}


def _assert_the_probes_attempts(found: list[dict[str, str]], *, root: bool = True) -> None:
    """What ``full`` records of the probe project: the decoys opened and the name resolved,
    the host's TCP and UDP listeners tried, the set-uid copy run (where root's audit made
    one), the daemon left running after build_wheel, nothing more (the other probes try
    nothing recorded, but for the fork bomb's sleeps where one starts)."""
    expected = sorted(PROBE_ATTEMPTS, key=lambda item: sorted(item.items()))
    assert [item for item in found if item["kind"] in ("dns", "credential")] == expected
    connects = [item for item in found if item["kind"] == "connect"]
    assert sorted(item["protocol"] for item in connects) == ["tcp", "udp"], found
    assert all(item["address"] == host_address() for item in connects), found
    ran = [shlex.split(item["argv"]) for item in found if item["kind"] == "exec"]
    setuid = [argv[1:] for argv in ran if argv[0].endswith("/setuid-id")]
    assert setuid == ([["-u"]] if root else []), ran
    assert all(argv[0].endswith("/setuid-id") or argv == ["/usr/bin/sleep", "5"]
               for argv in ran), ran
    # The daemon probe's detached grandchild, a fork of the hook runner, outlived build_wheel.
    left = [shlex.split(item["argv"]) for item in found if item["kind"] == "outlived"]
    assert [argv[2:3] for argv in left] == [["build_wheel"]], left
    assert left[0][1].endswith("/_in_process.py"), left
    assert len(found) == len(expected) + len(connects) + len(ran) + len(left), found


def test_the_probes_attempts_are_recorded_under_full_only(report: AuditReport) -> None:
    """Judged from the report: the probe project's attempts under ``full``, and nothing
    where nothing records."""
    for (profile, backend), found in _attempts_by_sandbox(report.to_dict()).items():
        if profile == "full":
            _assert_the_probes_attempts(found)
        else:
            assert found == [], (profile, backend, found)
    for status in report.sandboxes:
        assert status.attempts_omitted == {}, status
    for backend in report.backends:  # a decoy read is no secret read
        assert _verdicts(report, "full", backend)["cred_home_netrc"].verdict == "blocked"


def test_every_probe_reported_in_every_column(report: AuditReport) -> None:
    """No cell is an error here: every probe ran and said what happened."""
    errors = [f for f in report.findings if f.verdict == "error"]
    assert not errors, errors


def _audit_prefixes(owner: int) -> tuple[str, ...]:
    """How the names an audit of process *owner* plants begin (its tags: ``PID-N-...``)."""
    return (f"bj-audit-{owner}-", f"bj-audit-t{owner}-")


def _host_state(owner: int) -> dict[str, Any]:
    """What the audits of process *owner* plant on the host, by their tags and their
    creator: only that, so that the rest of a busy host (other audits included), changing at
    any time, cannot fail the comparison."""
    prefixes = _audit_prefixes(owner)

    def listing(path: str) -> list[str]:
        try:
            return sorted(name for name in os.listdir(path) if name.startswith(prefixes))
        except FileNotFoundError:
            return []

    with open("/etc/passwd") as stream:
        passwd = [line for line in stream if any(prefix in line for prefix in prefixes)]
    return {
        "etc": listing("/etc"), "home": listing("/home"), "run": listing("/run"),
        "run_secrets": listing("/run/secrets"), "dev_shm": listing("/dev/shm"),
        "tmp": listing("/tmp"), "opt": listing("/opt"), "srv": listing("/srv"),
        "var_cache": listing("/var/cache"), "shm": _audit_shm(owner), "passwd": passwd,
        "victims": _audit_victims(owner),
    }


def _audit_victims(owner: int) -> int:
    """Processes with a canary of *owner*'s audits in their environment (their tags start
    with its pid): the victims, and anything of the builds that outlived them."""
    ours = f"bj-audit-{owner}-".encode()
    count = 0
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as stream:
                count += ours in stream.read()
        except OSError:
            continue
    return count


def _audit_shm(owner: int) -> list[str]:
    """System V segments that process *owner* created in the range audits take their keys
    from (0x40000000 and up)."""
    with open("/proc/sysvipc/shm") as stream:
        rows = [line.split() for line in stream.readlines()[1:]]
    return sorted(row[0] for row in rows if int(row[0]) >= 0x40000000 and int(row[4]) == owner)


@pytest.fixture
def audit_workdirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The work directories the audits of this process make (random names in /var/lib)."""
    made: list[Path] = []
    workdir = runner._workdir

    @contextlib.contextmanager
    def recording(keep: bool) -> Iterator[Path]:
        with workdir(keep) as path:
            made.append(path)
            yield path

    monkeypatch.setattr(runner, "_workdir", recording)
    return made


def test_the_audit_leaves_the_host_as_it_found_it(report: AuditReport,
                                                  audit_workdirs: list[Path]) -> None:
    before = _host_state(os.getpid())
    run_audit(["none"], ["native"])
    assert _host_state(os.getpid()) == before
    assert audit_workdirs and not [path for path in audit_workdirs if path.exists()]


AUDIT_SAYING_WORKDIRS = """
import contextlib, sys
from buildjail.audit import runner
from buildjail.cli import main
workdir = runner._workdir
@contextlib.contextmanager
def saying(keep):
    with workdir(keep) as path:
        print(path, flush=True)
        yield path
runner._workdir = saying
sys.exit(main(sys.argv[1:]))
"""
"""``buildjail ARGS``, printing each audit work directory it makes on stdout."""


def test_an_interrupted_audit_leaves_nothing_behind() -> None:
    proc = subprocess.Popen([sys.executable, "-c", AUDIT_SAYING_WORKDIRS, "audit",
                             "--profile", "none", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd="/", text=True)
    nothing = _host_state(proc.pid)  # no name carries its pid yet: all empty
    prefixes = _audit_prefixes(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            name.startswith(prefixes) for name in os.listdir("/dev/shm")):
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the probe build
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    time.sleep(0.5)
    assert _host_state(proc.pid) == nothing
    workdirs = [Path(line) for line in out.splitlines() if line.startswith("/")]
    assert workdirs and not [path for path in workdirs if path.exists()]


def test_cli_exit_code_gates_on_full(tmp_path: Path) -> None:
    require_backend("bwrap")
    proc = subprocess.run([sys.executable, "-m", "buildjail", "audit", "--profile", "full",
                           "--backend", "native", "--backend", "bwrap"],
                          capture_output=True, text=True, timeout=600, check=False, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    tried = ("tried: read decoy ~/.netrc; read decoy ~/.ssh/id_ed25519; read decoy "
             "~/.aws/credentials; read decoy ~/.docker/config.json; DNS pypi.org; "
             rf"connect tcp {re.escape(host_address())}:\d+; "
             rf"connect udp {re.escape(host_address())}:\d+; "
             r"left running \S+/python \S+/_in_process\.py build_wheel \S+")  # the daemon
    for line, backend in zip(lines[:2], ("native", "bwrap"), strict=True):
        assert re.fullmatch(rf"sandbox full/{backend}: set up; {tried}", line), lines
    header = lines[2].split()
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


SANDBOX_REFUSED = """
import sys
from buildjail._linux import seccomp
from buildjail.cli import main
seccomp.install_filter(seccomp.build_filter())  # no namespaces for this process any more
sys.exit(main(["audit", "--profile", "full", "--backend", sys.argv[1], "--json"]))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sandbox_that_cannot_start_is_an_error_not_a_pass(backend: str) -> None:
    """Every probe is an error (none ran), the exit code is 1, and the JSON says why."""
    require_backend(backend)
    proc = subprocess.run([sys.executable, "-c", SANDBOX_REFUSED, backend], cwd="/",
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    [status] = data["sandboxes"]
    assert status["set_up"] is False
    assert "namespaces" in status["error"] and "seccomp" in status["error"], status
    verdicts = {finding["verdict"] for finding in data["findings"]}
    assert verdicts == {"error"}, verdicts


def test_the_table_says_first_that_the_sandbox_was_not_set_up() -> None:
    script = SANDBOX_REFUSED.replace(', "--json"', "")
    proc = subprocess.run([sys.executable, "-c", script, "native"], cwd="/",
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("sandbox full/native: NOT SET UP, every probe is an error: "), first
    assert f"full/native: 0 vulnerable, {len(VECTORS)} error" in proc.stdout


def _run_audit_as(uid: int, home: Path, world_src: str, site: Path,
                  *profiles: str) -> subprocess.CompletedProcess[str]:
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
         "/usr/bin/python3.11", "-m", "buildjail", "audit", *args, "--json"],
        cwd="/", capture_output=True, text=True, timeout=600, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home),
             "PYTHONPATH": f"{world_src}:{site}"})


@pytest.fixture
def nonroot_home(shared_dir: Path) -> Path:
    """A home directory of the non-root user, where its audit plants the bait."""
    home = shared_dir / "home"
    home.mkdir(mode=0o700)
    os.chown(home, 4242, 4242)
    return home


def test_the_non_root_audit_passes_where_the_non_root_sandbox_works(
        nonroot_home: Path, world_src: str, nonroot_site: Path) -> None:
    proc = _run_audit_as(4242, nonroot_home, world_src, nonroot_site, "full", "none")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["host"]["euid"] == 4242
    [full] = [found for (profile, _), found in _attempts_by_sandbox(data).items()
              if profile == "full"]
    _assert_the_probes_attempts(full, root=False)
    findings = {(f["profile"], f["vector"]): f for f in data["findings"]}
    for vector in VECTORS:
        full = findings[("full", vector.id)]
        assert full["verdict"] in ("blocked", "not_applicable"), full
    # The control: without a sandbox the bait a non-root user can plant is really reached,
    # its home's credentials and its other builds included (they live in that home).
    for vector_id in ("cred_home_netrc", "cred_home_ssh", "cred_home_cloud", "env_tokens",
                   "proc_parent_cmdline", "ptrace", "net_tcp", "net_udp", "shell_profile",
                   "pip_conf", "other_build", "other_output", "shared_cache", "tmp_shared",
                   "daemon", "fork_bomb", "memory_hog", "disk_filler", "host_unix_socket",
                   "disk_files", "memory_sysv", "memory_sockets", "memory_memfd"):
        finding = findings[("none", vector_id)]
        assert finding["verdict"] == "vulnerable", finding
    assert list(nonroot_home.iterdir()) == []  # the bait is gone again


def test_the_non_root_audit_needs_a_home_it_owns(world_src: str, nonroot_site: Path) -> None:
    proc = _run_audit_as(4242, Path("/nonexistent"), world_src, nonroot_site, "full")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "buildjail: the audit plants its bait in your home directory, and /nonexistent is not "
        "a directory you own and can write: set HOME to one"], proc.stderr


def _context(**changes: Any) -> _Context:
    base: dict[str, Any] = {"profile": "full", "backend": "native", "degraded": {},
                            "setup_error": None, "hostname": "c0ffee", "targets": {
                                "parent_pid": "111", "victim_pid": "222"}}
    return _Context(**{**base, **changes})


@pytest.mark.parametrize(("vector", "outside", "verdict"), [
    ("other_build", "/var/lib/x/other-build/src/pwned absent", "blocked"),
    ("other_build", "/var/lib/x/other-build/src/pwned exists", "vulnerable"),
    ("pip_conf", "/home/u/.config/pip/pip.conf absent", "blocked"),
    ("net_udp", "UDP socket received 0 datagram(s)", "blocked"),
    ("net_udp", "UDP socket received 1 datagram(s)", "vulnerable"),
    ("setid_tree", "/p/setid-left mode 0644, uid 0: no set-id bit", "blocked"),
    ("setid_tree", "/p/setid-left mode 6755, uid 0: kept set-id bits", "vulnerable"),
    ("setid_tree", "/p/setid-left absent", "blocked"),
])
def test_writes_and_datagrams_are_judged_by_what_reached_the_host(
        vector: str, outside: str, verdict: str) -> None:
    """A write into the sandbox's private view, a datagram sent nowhere: not on the host."""
    probe = {"vector": vector, "outcome": "succeeded", "detail": "created it / sent it"}
    assert _verdict(vector, probe, outside, _context())[0] == verdict


@pytest.mark.parametrize(("start", "verdict"), [("111", "vulnerable"), ("999", "blocked")])
def test_a_process_attack_counts_only_on_the_target_itself(start: str, verdict: str) -> None:
    """In a container the auditor is pid 1: the sandbox's own pid 1 is not the target."""
    probe = {"vector": "proc_parent_cmdline", "outcome": "succeeded",
             "detail": f"read 75 bytes of /proc/1/cmdline, pid 1 (comm 'python3', "
                       f"starttime {start})"}
    assert _verdict("proc_parent_cmdline", probe, None, _context())[0] == verdict


@pytest.mark.parametrize(("seen", "degraded", "verdict"), [
    ("c0ffee", {"hostname": "the runtime forbids sethostname"}, "degraded"),
    ("c0ffee", {}, "vulnerable"),
    ("the-host", {"hostname": "the runtime forbids sethostname"}, "vulnerable"),
])
def test_a_kept_container_hostname_is_degraded_only_when_reported(
        seen: str, degraded: dict[str, str], verdict: str) -> None:
    probe = {"vector": "hostname", "outcome": "succeeded", "detail": f"hostname seen: {seen}"}
    assert _verdict("hostname", probe, None, _context(degraded=degraded))[0] == verdict


def test_a_probe_that_did_not_report_is_an_error() -> None:
    assert _verdict("cred_shadow", None, None, _context())[0] == "error"
    assert _verdict("daemon", None, "heartbeat absent", _context())[0] == "error"
