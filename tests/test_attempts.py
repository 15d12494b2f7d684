"""What a build tried, recorded by the sandbox and judged from outside: decoys and DNS."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from buildjail import Policy, Sandbox, SandboxSetupError
from buildjail._linux import dns
from buildjail._linux.inotify import parse_events
from buildjail.attempts import (
    MAX_ATTEMPTS,
    MAX_FIELD,
    AttemptLog,
    attempt,
    from_json,
    merged_omitted,
    refusal,
    summary,
    suspicious,
    unrecorded,
)
from buildjail.build import HookRecord, PackageReport
from conftest import Listener, Runner, host_address, processes_with, require_backend
from sandbox_driver import run_spec

PYTHON = "/usr/bin/python3"
PROJECTS = Path(__file__).parent / "projects"
THIEF = """
import os, socket
for path in ("~/.netrc", "~/.aws/credentials"):
    with open(os.path.expanduser(path)) as stream:
        print(stream.read())
try:
    socket.getaddrinfo("pypi.org", 443)
except OSError as error:
    print("resolve:", error)
"""
EXPECTED = [{"kind": "credential", "path": "~/.netrc"},
            {"kind": "credential", "path": "~/.aws/credentials"},
            {"kind": "dns", "name": "pypi.org"}]
RECORDED = {"attempts:credentials", "attempts:dns"}
RECORDING = {"isolation": {"record_attempts": True}}
"""``full`` recording attempts, as the build frontends run it (a plain Sandbox does not)."""


def _key(item: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(item.items()))


def _same(found: list[dict[str, str]], expected: list[dict[str, str]]) -> bool:
    return sorted(map(_key, found)) == sorted(map(_key, expected))


def test_a_thief_is_recorded_exactly(run_sandbox: Runner) -> None:
    result = run_sandbox([PYTHON, "-c", THIEF], capture=True, cwd="/", policy=RECORDING)
    assert result["exit_code"] == 0, result
    assert _same(result["attempts"], EXPECTED), result["attempts"]
    assert result["attempts_omitted"] == {}
    assert set(result["layers"]) >= RECORDED
    assert "buildjail-decoy-" in result["stdout"]  # it read the decoys, not real files
    assert "Temporary failure in name resolution" in result["stdout"]  # as before: refused


def test_a_thief_is_recorded_through_the_fork_server(run_sandbox: Runner) -> None:
    # The server forks the supervisor: it still drains the init's status while it watches.
    result = run_sandbox([PYTHON, "-c", THIEF + FLOOD], capture=True, cwd="/", policy=RECORDING,
                         fork_server=True, limits={"wall_time": 120})
    assert result["exit_code"] == 0, result
    assert {_key(item) for item in EXPECTED} <= set(map(_key, result["attempts"]))
    assert len(result["attempts"]) > 100  # a report larger than a pipe holds
    assert set(result["layers"]) >= RECORDED


def test_a_clean_command_records_nothing(run_sandbox: Runner) -> None:
    result = run_sandbox([PYTHON, "-c", "import os; os.listdir(os.path.expanduser('~'))"],
                         policy=RECORDING,
                         cwd="/")
    assert result["exit_code"] == 0
    assert result["attempts"] == []
    assert set(result["layers"]) >= RECORDED
    assert not {key for key in result["degraded"] if key.startswith("attempts:")}


FLOOD = """
import os, socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
header = bytes.fromhex("123401000001000000000000")
for index in range(10000):
    label = f"n{index}".encode()
    packet = header + bytes([len(label)]) + label + b"\\x07example\\x00\\x00\\x01\\x00\\x01"
    try:
        sock.sendto(packet, ("127.0.0.1", 53))
    except OSError:
        pass
path = os.path.expanduser("~/.netrc")
for _ in range(10000):
    os.close(os.open(path, os.O_RDONLY))
print("done")
"""


def test_a_flood_is_capped_and_the_run_finishes(run_sandbox: Runner) -> None:
    result = run_sandbox([PYTHON, "-c", FLOOD], capture=True, cwd="/", policy=RECORDING,
                         limits={"wall_time": 120})
    assert result["exit_code"] == 0, result
    assert result["stdout"].strip() == "done"
    # Capped; what the kernel dropped while the init was busy is counted too, never lost.
    assert len(result["attempts"]) <= MAX_ATTEMPTS + 1
    assert len(result["attempts"]) + sum(result["attempts_omitted"].values()) >= 10000
    # The DNS flood filled only the DNS cap: the decoy read after it is there by name.
    assert {"kind": "credential", "path": "~/.netrc"} in result["attempts"]
    assert all(set(item) <= {"kind", "name", "path", "malformed", "bytes"}
               for item in result["attempts"])


MALFORMED = """
import socket, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
header = bytes.fromhex("abcd01000001000000000000")
for packet in (b"", b"\\xff" * 3, header + b"\\xc0\\x0c\\x00\\x01\\x00\\x01",
               header + b"\\x3fa" + b"\\x00", header + b"\\x80" * 600, b"\\x00" * 5000):
    sock.sendto(packet, ("127.0.0.1", 53))
start = time.monotonic()
try:
    socket.getaddrinfo("after.example", 80)
except OSError as error:
    print(type(error).__name__, round(time.monotonic() - start))
"""


def test_malformed_queries_are_recorded_as_such(run_sandbox: Runner) -> None:
    result = run_sandbox([PYTHON, "-c", MALFORMED], capture=True, cwd="/", policy=RECORDING)
    assert result["exit_code"] == 0, result
    names = [item["name"] for item in result["attempts"] if "name" in item]
    assert names == ["after.example"]  # still answered, at once
    assert result["stdout"].strip() == "gaierror 0"
    malformed = [item for item in result["attempts"] if item.get("malformed")]
    assert malformed and all(item["kind"] == "dns" for item in malformed)


@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_the_real_netrc_never_reaches_the_build(backend: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    require_backend(backend)
    home = Path("/var/lib") / f"buildjail-fake-home-{os.getpid()}"
    home.mkdir(mode=0o700)
    try:
        (home / ".netrc").write_text("machine pypi.org login me password REAL-SECRET-4711\n")
        monkeypatch.setenv("HOME", str(home))
        script = f"""
import os
print(open(os.path.expanduser("~/.netrc")).read())
try:
    print(open("{home}/.netrc").read())
except OSError as error:
    print("real:", error.errno)
"""
        first = run_spec({"cmd": [PYTHON, "-c", script], "backend": backend, "capture": True,
                          "policy": RECORDING,
                          "cwd": "/"})
        second = run_spec({"cmd": [PYTHON, "-c", script], "backend": backend, "capture": True,
                          "policy": RECORDING,
                          "cwd": "/"})
    finally:
        (home / ".netrc").unlink()
        home.rmdir()
    for result in (first, second):
        assert "REAL-SECRET" not in result["stdout"]
        assert "buildjail-decoy-" in result["stdout"]
        assert "real: 2" in result["stdout"]
    assert first["stdout"] != second["stdout"]  # a token of each run's own


@pytest.mark.parametrize("policy", [Policy.profile("full"),
                                    Policy.profile("full").recording_attempts()],
                         ids=["plain-sandbox", "build-frontends"])
def test_a_plain_sandbox_records_nothing_the_build_frontends_do(policy: Policy) -> None:
    """``full`` leaves it to the frontend: build, fromager and audit record, a plain
    Sandbox (and ``buildjail run``) does not, for the 10-30 ms a call it costs."""
    records = policy.record_attempts is True
    result = Sandbox(policy, backend="native").run(
        [PYTHON, "-c", "open(__import__('os').path.expanduser('~/.netrc')).read()"], cwd="/")
    assert result.exit_code == (0 if records else 1), result
    assert bool(RECORDED & set(result.layers)) is records
    assert [a.to_dict() for a in result.attempts] == (
        [{"kind": "credential", "path": "~/.netrc"}] if records else [])


def test_a_policy_that_says_false_stays_off_in_the_frontends() -> None:
    off = Policy.from_mapping({"isolation": {"record_attempts": False}})
    assert off.recording_attempts().record_attempts is False
    assert Policy.profile("none").recording_attempts().record_attempts is None


def test_recording_off_plants_nothing() -> None:
    policy = Policy.from_mapping({"isolation": {"record_attempts": False}})
    result = Sandbox(policy, backend="native").run(
        [PYTHON, "-c", "import os; print(os.listdir(os.path.expanduser('~')))"], cwd="/")
    assert result.exit_code == 0
    assert result.attempts == ()
    assert not RECORDED & set(result.layers)
    assert not [key for key in result.degraded if key.startswith("attempts:")]


@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_no_decoys_where_the_host_network_is_reachable(backend: str, tmp_path: Path) -> None:
    # pip or requests would send a decoy to the real pypi.org as its credentials.
    require_backend(backend)
    from buildjail.backends._supervisor import NO_NETWORK_NAMESPACE

    full = Policy.profile("full")
    policy = full._replace(namespaces=full.namespaces - {"net"}, record_attempts=True)
    script = "import os; print(os.path.exists(os.path.expanduser('~/.netrc')))"
    with open(tmp_path / "out", "wb") as out:
        result = Sandbox(policy, backend=backend).run([PYTHON, "-c", script], cwd="/",
                                                      stdout=out.fileno())
    assert result.exit_code == 0, result
    assert (tmp_path / "out").read_text().strip() == "False"
    assert "attempts:credentials" not in result.layers
    assert result.degraded["attempts:credentials"] == NO_NETWORK_NAMESPACE


def test_landlock_says_it_records_nothing() -> None:
    from buildjail.backends.landlock import NOT_RECORDED

    try:
        result = Sandbox(Policy.profile("full").recording_attempts(), backend="landlock").run(
            ["/bin/true"], cwd="/")
    except Exception as error:  # a kernel without Landlock: the plan says it all the same
        pytest.skip(f"landlock cannot run here: {error}")
    assert result.attempts == ()
    assert {key: result.degraded[key] for key in NOT_RECORDED} == NOT_RECORDED


def _query(name: bytes, header: str = "abcd01000001000000000000") -> bytes:
    return bytes.fromhex(header) + name + b"\x00\x01\x00\x01"


@pytest.mark.parametrize(("packet", "why"), [
    (b"", "size"),
    (_query(b"\x04pypi\x03org\x00", "abcd81000001000000000000"), "not one question"),
    (_query(b"\x04pypi\x03org\x00", "abcd01000002000000000000"), "not one question"),
    (_query(b"\xc0\x0c"), "compression pointer forwards"),
    (bytes.fromhex("abcd01000001000000000000") + b"\x05pypi", "label"),
    (bytes.fromhex("abcd01000001000000000000") + b"\x04pypi", "name runs past the packet"),
    (bytes.fromhex("abcd01000001000000000000") + b"\x3fa", "label"),
    (_query((b"\x3f" + b"a" * 63) * 5 + b"\x00"), "label"),
    (_query(b"\x80\x00"), "label type"),
    (b"\x00" * (dns.MAX_PACKET + 1), "size"),
])
def test_malformed_packets_are_refused(packet: bytes, why: str) -> None:
    with pytest.raises(dns.MalformedQueryError, match=why):
        dns.parse_query(packet)


def test_a_query_is_answered_refused_with_its_question() -> None:
    query = _query(b"\x04PyPI\x03org\x00")
    name, answer = dns.parse_query(query)
    assert name == "pypi.org"
    assert answer[:2] == query[:2]
    assert answer[3] & 0x0F == 5  # REFUSED
    assert answer[12:] == query[12:]


def test_names_are_escaped() -> None:
    name, _ = dns.parse_query(_query(b"\x04a\x1b[m\x03org\x00"))
    assert name == "a\\027\\091m.org"


def test_pointer_chains_end() -> None:
    # Pointers only go backwards, into the header here: the chain ends, bounded.
    header = bytes.fromhex("abcd01000001c004c006c008")
    name, _ = dns.parse_query(header + b"\xc0\x0a\x00\x01\x00\x01")
    assert name == "."


def test_inotify_events_are_parsed_whole_only() -> None:
    event = (3).to_bytes(4, "little") + (0x20).to_bytes(4, "little") + bytes(4)
    whole = event + (0).to_bytes(4, "little")
    assert parse_events(whole * 2) == [(3, 0x20), (3, 0x20)]
    assert parse_events(whole + event + (99).to_bytes(4, "little")) == [(3, 0x20)]
    assert parse_events(whole[:10]) == []


def test_the_log_is_capped_and_distinct() -> None:
    log = AttemptLog(limit=2)
    for name in ("a", "a", "b", "c", "d"):
        log.add(attempt("dns", name=name))
    log.lost("dns", 3)
    assert [item.to_dict() for item in log.attempts] == [{"kind": "dns", "name": "a"},
                                                         {"kind": "dns", "name": "b"}]
    assert log.omitted == {"dns": 5}
    assert summary(log.attempts, log.omitted) == "tried: DNS a; DNS b; and 5 more"
    assert summary(()) == ""


def test_a_dns_flood_never_caps_a_credential_away() -> None:
    log = AttemptLog()
    for index in range(1000):
        log.add(attempt("dns", name=f"junk{index}.example"))
    for path in ("~/.netrc", "~/.pypirc", "~/.aws/credentials", "~/.ssh/id_ed25519",
                 "~/.docker/config.json"):
        log.add(attempt("credential", path=path))
    log.add(attempt("dns", name="upload.evil.example"))
    kinds = [item.kind for item in log.attempts]
    assert kinds.count("credential") == 5 and kinds.count("dns") == MAX_ATTEMPTS
    assert log.omitted == {"dns": 1}  # per kind: what was lost is said of its kind


def test_the_summary_says_what_it_leaves_out_credentials_first() -> None:
    junk = [{"kind": "dns", "name": f"junk{index}.example"} for index in range(1000)]
    report = PackageReport(source="x", hooks=[
        HookRecord("get_requires_for_build_wheel", 1.0, 0, attempts=junk,
                   attempts_omitted={"dns": 7}),
        HookRecord("build_wheel", 1.0, 0, attempts=[
            {"kind": "dns", "name": "upload.evil.example"},
            {"kind": "credential", "path": "~/.netrc"}])])
    line = report.attempts_summary()
    assert line.startswith("tried: read decoy ~/.netrc; DNS junk0.example")
    *named, more = line.removeprefix("tried: ").split("; ")
    assert more == f"and {1002 - len(named) + 7} more", line  # nothing dropped unsaid
    assert summary([attempt("dns", name="a")], {"credential": 2}) == "tried: DNS a; and 2 more"


def test_attempts_read_back_are_bounded() -> None:
    junk: Any = [{"kind": "dns", "name": "x" * 10000}, {"kind": 3}, "no", {"kind": "dns",
                                                                           "name": ["l"]}]
    found = from_json(junk)
    [name] = [item.to_dict()["name"] for item in found]
    assert len(name) <= MAX_FIELD and name.startswith("xxx") and "cut, crc32" in name
    assert from_json({"kind": "dns"}) == ()


def test_a_long_name_keeps_its_domain_whole() -> None:
    # The longest name a query can carry, every byte escaped: ~1000 characters, kept whole.
    labels = b"".join(b"\x3f" + b"#" * 63 for _ in range(3)) + b"\x3d" + b"#" * 61
    name, _ = dns.parse_query(_query(labels + b"\x00"))
    assert len(name) > 900 and attempt("dns", name=name).to_dict()["name"] == name
    first, second = ("a" * 2000 + tail for tail in (".one.attacker.example",
                                                    ".two.attacker.example"))
    kept = [attempt("dns", name=value).to_dict()["name"] for value in (first, second)]
    assert kept[0].endswith(".one.attacker.example") and len(kept[0]) <= MAX_FIELD
    middle = [attempt("dns", name=f"{'b' * 600}{mark}{'b' * 600}").to_dict()["name"]
              for mark in "xy"]
    assert middle[0] != middle[1]  # differing only in the cut: still told apart


def _buildjail_build(backend: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildjail", "build", "--backend", backend,
                           *args], capture_output=True, text=True, check=False, cwd="/",
                          timeout=600)


THIEVING_SDIST = '''

def build_sdist(sdist_directory, config_settings=None):
    import os, socket
    open(os.path.expanduser("~/.pypirc")).read()
    try:
        socket.getaddrinfo("upload.example.org", 443)
    except OSError:
        pass
    return _honest_build_sdist(sdist_directory, config_settings)
'''


def test_a_build_reports_each_hooks_attempts(sandbox_backend: str, tmp_path: Path) -> None:
    project = tmp_path / "intree"
    shutil.copytree(PROJECTS / "intree", project)
    backend = project / "_backend" / "tinybackend.py"
    text = backend.read_text().replace("def build_sdist(", "def _honest_build_sdist(")
    backend.write_text(text + THIEVING_SDIST)
    report = tmp_path / "report.json"
    proc = _buildjail_build(sandbox_backend, str(project), "-o", str(tmp_path / "dist"),
                            "--report", str(report), "--no-index")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(report.read_text())
    tried = {hook["name"]: hook["attempts"] for hook in entry["hooks"]}
    assert _same(tried.pop("build_sdist"), [{"kind": "credential", "path": "~/.pypirc"},
                                            {"kind": "dns", "name": "upload.example.org"}])
    assert not any(tried.values()), tried  # attributed to the hook that tried
    assert "tried: " in proc.stdout
    assert "read decoy ~/.pypirc" in proc.stdout and "DNS upload.example.org" in proc.stdout


def test_a_real_setuptools_build_tries_nothing(sandbox_backend: str, tmp_path: Path,
                                              wheelhouse: Path) -> None:
    """... so ``--on-attempt fail`` builds it (no false positive)."""
    project = tmp_path / "simple"
    shutil.copytree(PROJECTS / "simple", project)
    report = tmp_path / "report.json"
    proc = _buildjail_build(sandbox_backend, str(project), "-o", str(tmp_path / "dist"),
                            "--report", str(report), "--no-index", "--find-links",
                            str(wheelhouse), "--on-attempt", "fail")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "dist").iterdir())) == 2
    [entry] = json.loads(report.read_text())
    assert entry["hooks"] and all(hook["attempts"] == [] for hook in entry["hooks"])
    assert set(entry["layers"]) >= RECORDED
    assert "tried:" not in proc.stdout


def test_decoys_raise_no_scanner_alert_and_parse() -> None:
    import base64
    import re

    from buildjail.decoys import decoy_contents

    contents = decoy_contents("0123456789abcdef01234567")
    assert not re.search(rb"AKIA[0-9A-Z]{16}", contents[".aws/credentials"])
    auth = json.loads(contents[".docker/config.json"])["auths"][
        "https://index.docker.io/v1/"]["auth"]
    assert base64.b64decode(auth, validate=True) == (
        b"decoy:buildjail-decoy-0123456789abcdef01234567")


class _BrokenTrap:
    """A DNS trap whose socket fails on the next read: what a recorder must survive."""

    closed = False

    def fileno(self) -> int:
        return 0

    def drain(self, *_: Any) -> None:
        raise OSError(5, "Input/output error")

    def close(self) -> None:
        self.closed = True


def test_a_failing_recorder_stops_recording_not_the_sandbox() -> None:
    """The init's reap loop calls drain(): a failure there must never end the build (the
    init is pid 1); the recording stops, and the report says so for each kind."""
    from buildjail.backends._recorder import Recorder
    from buildjail.backends.base import SetUp

    recorder = Recorder(SetUp(namespaces=0))
    trap = _BrokenTrap()
    recorder.trap = trap  # type: ignore[assignment]
    recorder.drain()
    assert trap.closed and recorder.fds() == []
    report: dict[str, Any] = {}
    recorder.fill(report)  # type: ignore[arg-type]
    assert report["unrecorded"] == {
        "attempts:dns": "not recorded: the recording stopped: OSError(5, 'Input/output error')"}


def test_every_kind_but_exec_is_suspicious_also_kinds_added_later() -> None:
    tried = [attempt("exec", argv="gcc -c x.c"), attempt("dns", name="pypi.org"),
             attempt("credential", path="~/.netrc"),
             attempt("connect", address="8.8.8.8", port="53", protocol="udp"),
             attempt("kind-of-tomorrow", what="x")]
    assert [item.kind for item in suspicious(tried)] == [
        "dns", "credential", "connect", "kind-of-tomorrow"]
    assert refusal(tried[:1]) == ""  # a compiler is no reason
    assert refusal(tried[:3]) == ("tried the network or a decoy: read decoy ~/.netrc; "
                                  "DNS pypi.org")
    assert refusal(tried[:1], {"exec": 40}) == ""
    assert refusal([], {"dns": 3}) == "tried the network or a decoy: 3 not named (only counted)"
    daemon = attempt("outlived", argv="/usr/bin/sleep 99")
    assert refusal([daemon]) == "left a process running: left running /usr/bin/sleep 99"
    assert refusal([daemon, tried[1]]).startswith(
        "tried the network or a decoy, or left a process running: ")
    assert summary([], {"connect": 1}) == "tried: 1 not named (only counted)"


def test_omitted_counts_are_merged_per_kind_hostile_values_dropped() -> None:
    hostile: list[Any] = [{"dns": 2}, {"dns": 3, "credential": 1}, {"dns": -4}, {"x": "7"},
                          "junk"]
    assert merged_omitted(hostile) == {"dns": 5, "credential": 1}


def test_what_fail_needs_recorded_is_every_kind_but_exec() -> None:
    both = ("attempts:credentials", "attempts:dns", "attempts:connect", "attempts:outlived")
    assert unrecorded((*both, "attempts:exec"), {}) == {}
    assert unrecorded(both, {"attempts:exec": "not recorded"}) == {}
    assert unrecorded(both[:1], {}) == {"attempts:dns": "not recorded",
                                        "attempts:connect": "not recorded",
                                        "attempts:outlived": "not recorded"}
    stopped = {"attempts:dns": "not recorded: the recording stopped: OSError(5)"}
    assert unrecorded(both, stopped) == stopped  # a recorder that stopped mid-run


def _result(**fields: Any) -> Any:
    from buildjail.result import RunResult

    return RunResult(exit_code=fields.pop("exit_code", 0), duration=0.1,
                     layers=fields.pop("layers", ("attempts:credentials", "attempts:dns",
                                                  "attempts:exec", "attempts:connect",
                                                  "attempts:outlived")),
                     **fields)


def test_on_attempt_fail_judges_each_run_and_fails_closed() -> None:
    from buildjail.errors import SandboxSetupError
    from buildjail.onattempt import AttemptsRefusedError, judge

    failing = Policy.profile("full").with_on_attempt("fail")
    thief = _result(attempts=(attempt("credential", path="~/.aws/credentials"),))
    judge(thief, Policy.profile("full"), "the build_wheel hook")  # warn: nothing raised
    judge(_result(attempts=(attempt("exec", argv="cc"),)), failing, "the hook")
    with pytest.raises(AttemptsRefusedError) as refused:
        judge(thief, failing, "the build_wheel hook")
    assert str(refused.value) == ("the build_wheel hook tried the network or a decoy: read "
                                  'decoy ~/.aws/credentials (on_attempt = "fail")')
    stopped = _result(degraded={"attempts:credentials": "bubblewrap's view was not seen in "
                                                        "time"})
    with pytest.raises(SandboxSetupError) as unseen:
        judge(stopped, failing, "the build_wheel hook")
    assert unseen.value.exit_code == 125 and "--on-attempt warn" in unseen.value.fix
    assert unseen.value.reason == (
        'on_attempt = "fail", but what the build_wheel hook tried was not recorded: '
        "attempts:credentials bubblewrap's view was not seen in time")
    # It recorded, but not whole: the fix is not a network namespace, which it had.
    assert "not whole" in unseen.value.fix
    with pytest.raises(SandboxSetupError) as never:  # a run that did not record it at all
        judge(_result(layers=("attempts:dns",)), failing, "the hook")
    assert "network namespace" in never.value.fix


# --- programs started and connections tried (the recording filter) -------------------------

CALLER = """
import ctypes, os, socket, subprocess, sys
def tried(what, call):
    try:
        call()
    except OSError as error:
        print(what, error.errno, flush=True)
tcp = socket.socket()
tried("connect", lambda: tcp.connect((sys.argv[1], int(sys.argv[2]))))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tried("sendto", lambda: udp.sendto(b"x", ("192.0.2.8", 53)))
tried("sendmsg", lambda: udp.sendmsg([b"x"], [], 0, ("203.0.113.5", 123)))
six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
tried("connect6", lambda: six.connect(("2001:db8::1", 80)))
local = socket.socket()
tried("loopback", lambda: local.connect(("127.0.0.1", 9)))
subprocess.run(["/bin/true", "two words"])
subprocess.run(["true", "--looked-up"])  # one execve per PATH entry: recorded once
if sys.argv[3:] == ["hidden"]:  # not dumpable: its memory is still the recorder's to read
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    os.execv("/bin/true", ["/bin/true", "undumpable"])
"""
CALLS = [{"kind": "connect", "address": "192.0.2.7", "port": "443", "protocol": "tcp"},
         {"kind": "connect", "address": "192.0.2.8", "port": "53", "protocol": "udp"},
         {"kind": "connect", "address": "203.0.113.5", "port": "123", "protocol": "udp"},
         {"kind": "connect", "address": "2001:db8::1", "port": "80", "protocol": "tcp"},
         {"kind": "exec", "argv": "/bin/true 'two words'"},
         {"kind": "exec", "argv": "true --looked-up"}]


def test_programs_and_connections_are_recorded_exactly(run_sandbox: Runner) -> None:
    argv = [PYTHON, "-c", CALLER, "192.0.2.7", "443"]
    result = run_sandbox(argv, capture=True, cwd="/", policy=RECORDING)
    assert result["exit_code"] == 0, result
    assert _same(result["attempts"], CALLS), result["attempts"]
    assert set(result["layers"]) >= {"attempts:exec", "attempts:connect"}
    assert not {key for key in result["degraded"] if key.startswith("attempts:")}
    # The calls got what they get unrecorded (the control): the same errors, in order.
    control = run_sandbox(argv, capture=True, cwd="/")
    assert control["attempts"] == [] and "attempts:exec" not in control["layers"]
    assert result["stdout"] == control["stdout"]
    assert result["stdout"].split() == ["connect", "101", "sendto", "101", "sendmsg", "101",
                                        "connect6", "101", "loopback", "111"]


def test_a_process_that_hides_its_memory_is_recorded_or_said(run_sandbox: Runner,
                                                              identity_kind: str) -> None:
    result = run_sandbox([PYTHON, "-c", CALLER, "192.0.2.7", "443", "hidden"], capture=True,
                         cwd="/", policy=RECORDING)
    assert result["exit_code"] == 0, result
    hidden = {"kind": "exec", "argv": "/bin/true undumpable"}
    if identity_kind == "root":  # the supervisor's CAP_SYS_PTRACE reads it all the same
        assert _same(result["attempts"], [*CALLS, hidden]), result["attempts"]
        assert result["attempts_omitted"] == {}
    else:  # the caller's uid cannot read a process that is not dumpable: counted, and said
        assert _same(result["attempts"], CALLS), result["attempts"]
        assert result["attempts_omitted"] == {"exec": 1}
        assert "could not be read" in result["degraded"]["attempts:exec"]


def test_a_connection_to_the_host_is_recorded_and_never_arrives(run_sandbox: Runner) -> None:
    address = host_address()
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address to listen on")
    server = Listener(address)
    try:
        result = run_sandbox([PYTHON, "-c", CALLER, address, str(server.port)], capture=True,
                             cwd="/", policy=RECORDING)
        # The control: the same caller, unsandboxed, does reach the listener.
        subprocess.run([PYTHON, "-c", CALLER, address, str(server.port)], check=True,
                       capture_output=True, timeout=60)
        time.sleep(0.5)
        assert server.connections == 1  # the control's, none from the sandbox
    finally:
        server.close()
    assert {"kind": "connect", "address": address, "port": str(server.port),
            "protocol": "tcp"} in result["attempts"]


MANY = """
import os, sys
long = "x" * 5000
for index in range(int(sys.argv[1])):
    pid = os.posix_spawn("/bin/true", ["/bin/true", str(index), *[long] * 100], {})
    os.waitpid(pid, 0)
print("done")
"""


def test_an_exec_flood_is_capped_and_each_one_bounded(run_sandbox: Runner) -> None:
    result = run_sandbox([PYTHON, "-c", MANY, str(MAX_ATTEMPTS + 50)], capture=True, cwd="/",
                         policy=RECORDING, limits={"wall_time": 300})
    assert result["exit_code"] == 0, result
    assert result["stdout"].strip() == "done"
    execs = [item for item in result["attempts"] if item["kind"] == "exec"]
    assert len(execs) == MAX_ATTEMPTS
    assert result["attempts_omitted"] == {"exec": 50}
    assert all(len(item["argv"]) <= MAX_FIELD for item in execs)
    assert execs[0]["argv"].startswith("/bin/true 0 xxxx") and "cut, crc32" in execs[0]["argv"]


CONNECT_FLOOD = """
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    try:
        sock.sendto(b"x", ("192.0.2.9", 9))
    except OSError:
        pass
"""


def test_a_flood_of_recorded_calls_never_starves_the_wall_time(run_sandbox: Runner) -> None:
    started = time.monotonic()
    result = run_sandbox([PYTHON, "-c", CONNECT_FLOOD], cwd="/", policy=RECORDING,
                         limits={"wall_time": 3})
    assert time.monotonic() - started < 30
    assert result["limit_hit"] == "wall_time", result
    # What the supervisor recorded survives the init's death (its own report does not).
    assert {"kind": "connect", "address": "192.0.2.9", "port": "9",
            "protocol": "udp"} in result["attempts"]


MMSG = """
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def address(host, port):
    family = struct.pack("<H", socket.AF_INET)
    return family + struct.pack(">H", port) + socket.inet_aton(host) + bytes(8)
names = [address("127.0.0.1", 9)] * 64 + [address("10.9.9.9", 4444)] * 6
payload = ctypes.create_string_buffer(b"x")
iov = (ctypes.c_char * 16)()
struct.pack_into("<QQ", iov, 0, ctypes.addressof(payload), 1)
buffers = [ctypes.create_string_buffer(name, 16) for name in names]
headers = (ctypes.c_char * (64 * len(names)))()
for index, name in enumerate(buffers):
    struct.pack_into("<QI4xQQ", headers, 64 * index, ctypes.addressof(name), 16,
                     ctypes.addressof(iov), 1)
print(libc.sendmmsg(sock.fileno(), headers, len(names), 0))
"""


def test_messages_past_what_is_read_are_counted(run_sandbox: Runner) -> None:
    result = run_sandbox([PYTHON, "-c", MMSG], capture=True, cwd="/", policy=RECORDING)
    assert result["exit_code"] == 0, result
    assert result["stdout"].strip() == "64"  # the 65th failed: no route, as unrecorded
    assert [item for item in result["attempts"] if item["kind"] == "connect"] == []
    assert result["attempts_omitted"] == {"connect": 6}  # not read, never silently lost


def test_a_sockets_protocol_is_read_without_a_copy_of_it() -> None:
    from buildjail._linux.usernotify import protocol_of

    sockets = [socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
               socket.socket(socket.AF_INET6, socket.SOCK_STREAM)]
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        found = [protocol_of(os.getpid(), sock.fileno()) for sock in sockets]
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        for sock in sockets:
            sock.close()
    assert found == ["tcp", "udp", "tcp"]
    with open("/dev/null") as stream:  # not a socket
        assert protocol_of(os.getpid(), stream.fileno()) == "?"


LEAVER = "(setsid /bin/sleep {0} &); (/bin/sleep {0} &); (/bin/sleep 0.01 &); exit 0"
"""A command that leaves two processes running (one detached in its own session) and one
that ends within the grace, then exits."""


def _marker() -> str:
    """A sleep duration no other test or process uses, to find what this test planted."""
    return f"{7000 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"


def _outlived(attempts: list[dict[str, str]]) -> list[dict[str, str]]:
    return [item for item in attempts if item["kind"] == "outlived"]


def test_what_outlives_the_command_is_recorded_then_killed(run_sandbox: Runner) -> None:
    marker = _marker()
    result = run_sandbox(["/bin/sh", "-c", LEAVER.format(marker)], cwd="/", policy=RECORDING)
    assert result["exit_code"] == 0, result
    # Both leftovers, the same command line, recorded once; not the one that ended in time.
    assert _outlived(result["attempts"]) == [{"kind": "outlived", "argv": f"/bin/sleep {marker}"}]
    assert "attempts:outlived" in result["layers"]
    assert "attempts:outlived" not in result["degraded"]
    assert processes_with(marker) == []  # judged from outside: the sandbox killed them after


def test_leftovers_really_outlive_the_command_unsandboxed() -> None:
    # The control: the same command, unsandboxed, does leave its processes running.
    marker = _marker()
    subprocess.run(["/bin/sh", "-c", LEAVER.format(marker)], check=True, timeout=60)
    try:
        time.sleep(0.3)
        assert len(processes_with(marker)) == 2
    finally:
        for pid in processes_with(marker):
            os.kill(pid, 9)


def test_a_command_that_leaves_nothing_records_no_leftover(run_sandbox: Runner) -> None:
    waits = "/bin/sleep 0.2 & /bin/sleep 0.01 & wait; exit 3"  # children it waits for
    result = run_sandbox(["/bin/sh", "-c", waits], cwd="/", policy=RECORDING)
    assert result["exit_code"] == 3, result
    assert _outlived(result["attempts"]) == []
    assert "attempts:outlived" in result["layers"]


def test_landlock_records_what_outlives_the_command() -> None:
    marker = _marker()
    try:
        result = Sandbox(Policy.profile("full").recording_attempts(), backend="landlock").run(
            ["/bin/sh", "-c", LEAVER.format(marker)], cwd="/")
    except Exception as error:  # a kernel without Landlock
        pytest.skip(f"landlock cannot run here: {error}")
    found = [item.to_dict() for item in result.attempts if item.kind == "outlived"]
    assert found == [{"kind": "outlived", "argv": f"/bin/sleep {marker}"}]
    assert processes_with(marker) == []


HOSTILE_LEAVER = """
import os, sys
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sleep", [sys.argv[1], sys.argv[2]])
"""
HOSTILE_ARGV0 = "\x1b]52;c;ZXZpbA==\x07\nFAKE line"
"""An OSC 52 clipboard write and a newline that would start a forged line of a log."""


@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_a_hostile_command_line_is_summarised_on_one_line_escaped(backend: str) -> None:
    """The record keeps what the build left running exactly; the one-line summary a
    library user logs (``RunResult.attempts_summary``) shows its controls escaped."""
    marker = _marker()
    result = Sandbox(Policy.profile("full").recording_attempts(), backend=backend).run(
        ["/usr/bin/python3.11", "-c", HOSTILE_LEAVER, HOSTILE_ARGV0, marker], cwd="/")
    assert result.exit_code == 0, result
    recorded = [dict(item.fields)["argv"] for item in result.attempts if item.kind == "outlived"]
    assert recorded == [shlex.join([HOSTILE_ARGV0, marker])]  # exact, controls and all
    line = result.attempts_summary
    assert line == f"tried: left running '\\x1b]52;c;ZXZpbA==\\x07\\nFAKE line' {marker}"
    assert line.isprintable(), line
    assert processes_with(marker) == []


FLOOD_LEFT = """
import json, os, subprocess, sys, time
from buildjail.attempts import AttemptLog
from buildjail.backends import _leftovers
from buildjail.backends._leftovers import MAX_RECORDED, record_leftovers
marker = sys.argv[1]
children = [subprocess.Popen(["/bin/sleep", f"{marker}{index}"])
            for index in range(MAX_RECORDED + 6)]
log = AttemptLog()
whole = record_leftovers(log, (), grace=0)
_leftovers.MAX_WALKED = 10  # a walk cut short says so
cut = record_leftovers(AttemptLog(), (), grace=0)
for child in children:
    child.kill()
print(json.dumps([len(log.attempts), log.omitted, MAX_RECORDED, whole, cut]))
"""


def test_a_leftover_flood_is_capped() -> None:
    # A process of its own is their ancestor, as the init is the sandbox's: 70 running,
    # 64 read and recorded, the others counted.
    output = subprocess.run([sys.executable, "-c", FLOOD_LEFT, _marker()], check=True,
                            capture_output=True, text=True, timeout=120).stdout
    recorded, omitted, cap, whole, cut = json.loads(output)
    assert (recorded, omitted) == (cap, {"outlived": 6})
    assert (whole, cut) == (True, False)


def test_what_the_init_recorded_is_said_lost_when_the_wall_time_kills_it(
        run_sandbox: Runner) -> None:
    lookup = THIEF + ("\nimport subprocess, time\nsubprocess.run(['/bin/true', 'kept'])\n"
                      "time.sleep(60)\n")  # tries, then outlasts the wall time
    result = run_sandbox([PYTHON, "-c", lookup], cwd="/", policy=RECORDING,
                         limits={"wall_time": 3})
    assert result["limit_hit"] == "wall_time", result
    lost = {key: why for key, why in result["degraded"].items() if key.startswith("attempts:")}
    # The decoy reads and the name went with the init: said, so no clean record passes.
    assert set(lost) == {"attempts:credentials", "attempts:dns", "attempts:outlived"}, lost
    assert all("not recorded in full" in why for why in lost.values()), lost
    assert set(unrecorded(result["layers"], result["degraded"])) == set(lost)
    # The supervisor's own record survives: the program it ran.
    assert result["attempts"] == [{"kind": "exec", "argv": "/bin/true kept"}], result["attempts"]


def test_a_run_a_limit_stopped_keeps_the_limit_as_its_reason_under_fail() -> None:
    from buildjail.errors import SandboxSetupError
    from buildjail.onattempt import AttemptsRefusedError, judge

    failing = Policy.profile("full").with_on_attempt("fail")
    lost = {"attempts:dns": "not recorded in full: the wall time ran out before the init's "
                            "report"}
    timed_out = _result(exit_code=124, limit_hit="wall_time", degraded=lost)
    judge(timed_out, failing, "the build_wheel hook")  # failed already: the limit says why
    with pytest.raises(AttemptsRefusedError):  # what the supervisor recorded still counts
        judge(_result(exit_code=124, limit_hit="wall_time", degraded=lost,
                      attempts=(attempt("connect", address="192.0.2.1", port="443",
                                        protocol="tcp"),)), failing, "the hook")
    with pytest.raises(SandboxSetupError):  # the control: no limit, the loss fails closed
        judge(_result(degraded=lost), failing, "the build_wheel hook")


LEADER_GONE = """
import ctypes, sys, threading, time
threading.Thread(target=time.sleep, args=(30,)).start()
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit (x86-64): the leader alone; its thread runs on
"""
HOPPER = """
import os, sys, time
end = time.monotonic() + 30
while time.monotonic() < end:
    if os.fork():
        os._exit(0)  # gone at once: its child, adopted by the init, goes on the same way
"""


@pytest.mark.parametrize("program", [LEADER_GONE, HOPPER], ids=["leader-gone", "hopper"])
def test_a_leftover_that_hides_from_a_walk_is_recorded(run_sandbox: Runner,
                                                       program: str) -> None:
    # A thread group whose leader exited shows as a zombie; a process that forks itself
    # anew and exits is gone from where each walk looks: both ran unrecorded.
    marker = _marker()
    command = f"(setsid {PYTHON} -c \"$0\" {marker} &); /bin/sleep 0.3; exit 0"
    for _ in range(3):  # the hopper slipped past most walks
        result = run_sandbox(["/bin/sh", "-c", command, program], cwd="/", policy=RECORDING)
        assert result["exit_code"] == 0, result
        assert [item["argv"] for item in _outlived(result["attempts"])] == [
            f"{PYTHON} -c {shlex.quote(program)} {marker}"]
    assert processes_with(marker) == []


INOTIFY_HUNT = """
import os, sys
seen = []
for pid in (name for name in os.listdir("/proc") if name.isdigit()):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            seen.append(f"{pid}:{fd}:{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
print(" ".join(seen))
open(os.path.expanduser("~/.netrc")).read()  # the decoy watch must still see this
"""


@pytest.mark.parametrize("fork_server", [False, True], ids=["forked", "fork-server"])
def test_the_callers_decoy_instance_reaches_no_process_of_the_build(
        run_sandbox: Runner, fork_server: bool) -> None:
    """The caller's inotify instance (``Watch.decoy_fd``) is the init's only: no process
    the build can look at (bubblewrap's own included) holds it; the watch still works."""
    result = run_sandbox([PYTHON, "-c", INOTIFY_HUNT], capture=True, cwd="/",
                         policy=RECORDING, fork_server=fork_server)
    assert result["exit_code"] == 0, result
    assert ":0:" in result["stdout"], result["stdout"]  # it did see descriptors
    assert "inotify" not in result["stdout"], result["stdout"]
    assert {"kind": "credential", "path": "~/.netrc"} in result["attempts"], result


def _own_descriptors() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sorted(found)


def _settled() -> collections.Counter[str]:
    """This process's descriptors once the runs' close threads are done."""
    import threading

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            thread.name == "buildjail-close" for thread in threading.enumerate()):
        time.sleep(0.01)
    return collections.Counter(_own_descriptors())


@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_the_caller_keeps_no_descriptor_of_a_run_however_it_ends(backend: str) -> None:
    """Runs that end well, fail to start, or are killed by the wall time or a limit leave
    the caller no inotify instance (nor anything else) once the close threads are done."""
    require_backend(backend)
    policy = Policy.from_mapping({"extends": "full", "isolation": {
        "record_attempts": True, "cgroup_limits": False}})
    runs = [(["/bin/true"], policy),
            (["/nonexistent-program"], policy),
            (["/bin/sleep", "5"], policy.with_limits(wall_time=0.3)),
            ([PYTHON, "-c", "x = bytearray(300 << 20); import time; time.sleep(5)"],
             policy.with_limits(memory=64 << 20, wall_time=30))]
    Sandbox(policy, backend=backend, fork_server=False).run(["/bin/true"], cwd="/")
    before = _settled()
    for _ in range(3):
        for cmd, each in runs:
            with contextlib.suppress(SandboxSetupError):
                Sandbox(each, backend=backend, fork_server=False).run(cmd, cwd="/")
    left = _settled() - before
    assert not left, left


def test_a_run_ends_whole_where_no_thread_can_be_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller at its pids limit when a run ends (a container's other builds took the
    rest) cannot start the thread that closes the decoy instance: the run still returns
    its result, and gives back its descriptors and its identity lease."""
    import threading

    if os.geteuid() != 0:
        pytest.skip("the identity lease is root's")

    caller, start = os.getpid(), threading.Thread.start

    def refused(self: threading.Thread) -> None:
        if os.getpid() == caller:  # the caller's only: the init spawns from a thread too
            raise RuntimeError("can't start new thread")
        start(self)

    before = _settled()
    monkeypatch.setattr(threading.Thread, "start", refused)
    result = Sandbox(Policy.profile("full").recording_attempts(), backend="native",
                     fork_server=False).run(["/bin/true"], cwd="/")
    monkeypatch.undo()
    assert result.exit_code == 0
    left = collections.Counter(_own_descriptors()) - before
    assert not left, left  # no inotify instance, no lease's lock left open


LOOPBACK_OR_NOT = ("127.0.0.1", "127.255.255.254", "126.255.255.255", "128.0.0.1", "0.0.0.0",
                   "0.0.0.1", "10.0.0.1", "::1", "::", "::2", "::ffff:127.0.0.1",
                   "::ffff:127.1.2.3", "::ffff:0.0.0.0", "::ffff:10.0.0.1", "::127.0.0.1",
                   "::ffff:0:127.0.0.1", "fe80::1", "2001:db8::1", "::fffe:127.0.0.1")


def test_a_destination_is_loopback_as_ipaddress_tells() -> None:
    """The recording's own loopback test, read from the address's bytes (ipaddress is not
    imported by a run), agrees with ipaddress on the edges: 127/8, 0.0.0.0, ::1, ::, their
    IPv4-mapped forms, and their neighbours."""
    import ipaddress

    from buildjail._linux.usernotify import Destination

    def expected(address: str) -> bool:
        found = ipaddress.ip_address(address)
        if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
            found = found.ipv4_mapped
        return found.is_loopback or found.is_unspecified

    seen = {address: Destination(address, 80).loopback for address in LOOPBACK_OR_NOT}
    assert seen == {address: expected(address) for address in LOOPBACK_OR_NOT}
    assert sum(seen.values()) == 8  # the control: both answers are among the cases
