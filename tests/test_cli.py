"""The ``buildjail run`` command line: exit codes, reasons on stderr, the JSON report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from buildjail._linux.identity import BUILD_UID
from conftest import SYSTEM_PYTHON, Identity, hide_bubblewrap
from wheels import make_sdist

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
ROOT = Path(__file__).resolve().parent.parent


def buildjail(*args: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildjail", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_exit_code_and_streams_pass_through() -> None:
    proc = buildjail("run", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert proc.returncode == 7
    assert proc.stdout == "out\n"
    assert proc.stderr == "err\n"


def test_death_by_signal_is_128_plus_signal() -> None:
    assert buildjail("run", "--", "/bin/sh", "-c", "kill -KILL $$").returncode == 137


def test_timeout_is_124_and_reported() -> None:
    proc = buildjail("run", "--timeout", "1", "--", "/bin/sleep", "30")
    assert proc.returncode == 124
    assert "wall time limit" in proc.stderr


@pytest.mark.parametrize(("option", "command"), [
    ("--writable", ["run", "--writable", "{path}", "--", "/bin/true"]),
    ("--readonly", ["run", "--readonly", "{path}", "--", "/bin/true"]),
    ("--readonly", ["build", "--readonly", "{path}", "{tmp}"]),
])
def test_a_missing_path_option_is_bad_input_in_one_line(tmp_path: Path, option: str,
                                                        command: list[str]) -> None:
    missing = tmp_path / "nope"
    argv = [arg.format(option=option, path=missing, tmp=tmp_path) for arg in command]
    proc = buildjail(*argv)
    assert proc.returncode == 2
    assert proc.stderr == f"buildjail: {option} {missing}: no such file or directory\n"
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_policy_files_missing_path_is_125_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    policy = tmp_path / "policy.toml"
    policy.write_text(f'extends = "full"\n[filesystem]\nwritable = ["{missing}"]\n')
    proc = buildjail("run", "--policy", str(policy), "--", "/bin/true")
    assert proc.returncode == 125
    first, fix = proc.stderr.splitlines()
    assert f"the writable path {missing} does not exist" in first
    assert fix.strip().startswith("fix:")


def test_missing_command_is_125() -> None:
    proc = buildjail("run", "--", "/no/such/command")
    assert proc.returncode == 125
    assert "cannot execute '/no/such/command'" in proc.stderr


def test_unknown_option_is_a_usage_error() -> None:
    proc = buildjail("run", "--frobnicate", "--", "/bin/true")
    assert proc.returncode == 2 and "unrecognized arguments: --frobnicate" in proc.stderr


def test_no_command_is_a_usage_error() -> None:
    proc = buildjail("run")
    assert proc.returncode == 2
    assert "no command given" in proc.stderr


def test_json_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = buildjail("run", "--json-report", str(report), "--", "/bin/sh", "-c", "exit 3")
    assert proc.returncode == 3
    data = json.loads(report.read_text())
    assert data["exit_code"] == 3 and data["policy"] == "full" and data["backend"] == "native"
    assert {"namespace:pid", "namespace:net", "seccomp", "filesystem"} <= set(data["layers"])
    assert data["duration"] > 0 and data["limit_hit"] is None


def test_writable_and_keep_env_options(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "buildjail", "run", "--writable", str(out), "--keep-env",
         "MY_BUILD_*", "--", "/bin/sh", "-c", f'echo "$MY_BUILD_FLAG" > {out}/flag; id -u'],
        capture_output=True, text=True, check=False, cwd="/",
        env={**os.environ, "MY_BUILD_FLAG": "on"},
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "flag").read_text() == "on\n"
    assert (out / "flag").stat().st_uid == 0  # handed back from the ephemeral uid
    assert int(proc.stdout) == BUILD_UID  # the fixed uid inside, the leased one outside


def test_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('extends = "full"\n[limits]\nwall_time = 1\n')
    proc = buildjail("run", "--policy", str(policy), "--", "/bin/sleep", "10")
    assert proc.returncode == 124


def test_bad_policy_file_is_an_error(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[limits]\nbogus = 1\n")
    proc = buildjail("run", "--policy", str(policy), "--", "/bin/true")
    assert proc.returncode == 2
    assert "unknown key" in proc.stderr


def test_network_profile_sees_the_host_filesystem(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("visible")
    proc = buildjail("run", "--profile", "network", "--", "/bin/sh", "-c",
                     f"cat {marker}; echo; hostname; /usr/bin/python3.11 -c "
                     "'import socket; print(*[n for _, n in socket.if_nameindex()])'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["visible", "localhost", "lo"]


def test_python_dash_m(tmp_path: Path) -> None:
    # The checkout may live under /tmp (private in the sandbox): expose it like the README does.
    checkout = str(Path(__file__).resolve().parent.parent)
    proc = buildjail("run", "--readonly", checkout, "--", sys.executable, "-m",
                     "buildjail.examples.whoami")
    assert proc.returncode == 0, proc.stderr
    assert "read /root/.netrc" in proc.stdout and "ALLOWED" not in proc.stdout


def test_ctrl_c_stops_the_sandbox_and_exits_130() -> None:
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "buildjail", "run", "--", "/bin/sh", "-c",
                             "echo started; exec /bin/sleep 30"], cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "started\n"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert time.monotonic() - started < 10
    sleepers = subprocess.run(["ps", "-eo", "uid=,args="], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    assert not [line for line in sleepers
                if "/bin/sleep 30" in line and int(line.split()[0]) >= 1_000_000]


def test_bwrap_backend_without_bubblewrap_is_125_with_the_fix(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [sys.executable, "-m", "buildjail", "run", "--backend", "bwrap", "--writable",
         str(tmp_path), "--", "/usr/bin/touch", str(marker)],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
        preexec_fn=hide_bubblewrap)
    assert proc.returncode == 125, proc.stderr
    assert "bubblewrap, which is not installed" in proc.stderr
    assert "apt-get install bubblewrap" in proc.stderr
    assert not marker.exists()  # fail closed: nothing ran unconfined


def test_bwrap_reports_its_own_setup_failure_as_125(tmp_path: Path) -> None:
    """A working directory the sandbox cannot show: bwrap refuses, the run stops with 125."""
    proc = subprocess.run(
        [sys.executable, "-m", "buildjail", "run", "--backend", "bwrap", "--", "/bin/true"],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(tmp_path))
    assert proc.returncode == 125, proc.stderr
    assert "bwrap could not set up the sandbox" in proc.stderr
    assert "bwrap: Can't chdir" in proc.stderr  # bubblewrap's own line, shown above ours


def test_explain_prints_the_view_and_runs_nothing(shared_dir: Path) -> None:
    marker = shared_dir / "ran"
    proc = buildjail("run", "--explain", "--writable", str(shared_dir), "--", "/bin/sh", "-c",
                     f"touch {marker}")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), "--explain ran the command"
    lines = proc.stdout.splitlines()
    assert "view (everything not listed is absent):" in lines
    assert any(line.startswith("  read-only, the system's: /usr") for line in lines), lines
    assert f"  writable: {shared_dir}" in lines
    absent = next(line for line in lines if line.startswith("  absent, among others: "))
    for name in ("/srv", "/opt", "/mnt", "/boot"):
        if os.path.isdir(name):
            assert name in absent.split(": ", 1)[1].split(", "), absent


def _tool_dir(shared_dir: Path) -> Path:
    """A directory under /root (hidden in the view) holding a tool the command calls."""
    tools = Path(tempfile.mkdtemp(prefix="bj-tools-", dir="/root"))
    tool = tools / "bj-test-tool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    tools.chmod(0o755)
    return tools


def test_a_tool_in_a_hidden_path_directory_gets_a_hint_naming_the_flag(shared_dir: Path) -> None:
    tools = _tool_dir(shared_dir)
    try:
        env = {**os.environ, "PATH": f"{tools}:/usr/bin:/bin"}
        hidden = subprocess.run(
            [sys.executable, "-m", "buildjail", "run", "--writable", str(shared_dir), "--",
             "/bin/sh", "-c", "bj-test-tool"], cwd=shared_dir, env=env, capture_output=True,
            text=True, timeout=120, check=False)
        assert hidden.returncode == 127, hidden.stderr
        assert f"--readonly {tools}" in hidden.stderr, hidden.stderr
        # The control: with the flag the hint names, the tool runs.
        shown = subprocess.run(
            [sys.executable, "-m", "buildjail", "run", "--writable", str(shared_dir),
             "--readonly", str(tools), "--", "/bin/sh", "-c", "bj-test-tool"], cwd=shared_dir,
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert (shown.returncode, shown.stdout) == (0, "tool ran\n"), shown.stderr
    finally:
        shutil.rmtree(tools)


def test_a_rendered_setup_failure_reads_back() -> None:
    from buildjail.errors import SandboxSetupError, parse_setup_failure, render_setup_failure

    error = SandboxSetupError("the cwd is not reachable", "run from elsewhere")
    text = render_setup_failure(error)
    assert text == ("buildjail: sandbox not set up: the cwd is not reachable\n"
                    "  fix: run from elsewhere")
    assert parse_setup_failure(text) == (error.reason, error.fix)
    assert parse_setup_failure(render_setup_failure(SandboxSetupError("no fix"))) == ("no fix", "")
    assert parse_setup_failure("") == ("", "")


# --- --on-attempt: a command that tried the network or a decoy -----------------------------

TRY_DNS = ("import socket, sys\n"
           "try:\n    socket.getaddrinfo('example.invalid', 80)\n"
           "except OSError:\n    pass\n"
           "sys.exit(int(sys.argv[1]))\n")
"""Resolves example.invalid (refused: no network), then exits with its argument."""
TRIED = "buildjail: tried: DNS example.invalid\n"
REFUSED = ('buildjail: the command tried the network or a decoy: DNS example.invalid '
           '(on_attempt = "fail")\n')


def _try_dns(*options: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return buildjail("run", *options, "--", SYSTEM_PYTHON, "-c", TRY_DNS, str(code))


def test_on_attempt_warn_says_what_the_command_tried() -> None:
    proc = _try_dns("--on-attempt", "warn")
    assert (proc.returncode, proc.stderr) == (0, TRIED)


@pytest.mark.parametrize(("code", "expected"), [(0, 1), (3, 3)])
def test_on_attempt_fail_fails_a_command_that_tried(tmp_path: Path, code: int,
                                                    expected: int) -> None:
    """Exit 1 (``errors.EXIT_TRIED``), or the command's own code when it failed itself; the
    report keeps the command's code and what it tried."""
    report = tmp_path / "report.json"
    proc = _try_dns("--on-attempt", "fail", "--json-report", str(report), code=code)
    assert (proc.returncode, proc.stderr) == (expected, TRIED + REFUSED)
    data = json.loads(report.read_text())
    assert data["exit_code"] == code
    assert data["attempts"] == [{"kind": "dns", "name": "example.invalid"}]


def test_on_attempt_fail_passes_a_command_that_tried_nothing() -> None:
    proc = buildjail("run", "--on-attempt", "fail", "--", SYSTEM_PYTHON, "-c", "print('hi')")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hi\n", "")


def test_on_attempt_is_the_policy_files_unless_the_option_says(tmp_path: Path) -> None:
    """Without the option or a failing policy, run records nothing (the cost): no line."""
    policy = tmp_path / "policy.toml"
    policy.write_text('extends = "full"\n[isolation]\non_attempt = "fail"\n')
    assert (_try_dns().returncode, _try_dns().stderr) == (0, "")
    failing = _try_dns("--policy", str(policy))
    assert (failing.returncode, failing.stderr) == (1, TRIED + REFUSED)
    warned = _try_dns("--policy", str(policy), "--on-attempt", "warn")
    assert (warned.returncode, warned.stderr) == (0, TRIED)


@pytest.mark.parametrize("args", [["--profile", "network"], ["--backend", "landlock"]])
def test_on_attempt_fail_where_nothing_is_recorded_fails_closed(tmp_path: Path,
                                                                args: list[str]) -> None:
    """Exit 125 before the command runs, with the reason and the fix."""
    marker = tmp_path / "ran"
    proc = buildjail("run", "--on-attempt", "fail", *args, "--writable", str(tmp_path), "--",
                     "/bin/touch", str(marker))
    assert proc.returncode == 125, proc.stderr
    first, fix = proc.stderr.splitlines()
    assert first.startswith('buildjail: sandbox not set up: on_attempt = "fail", but ')
    assert "--on-attempt warn" in fix
    assert not marker.exists()


def test_on_attempt_fail_as_either_identity(identity: Identity) -> None:
    """As root (an ephemeral uid) and as a non-root user (a user namespace) alike."""
    proc = identity.run([identity.python, "-m", "buildjail", "run", "--on-attempt", "fail",
                         "--", SYSTEM_PYTHON, "-c", TRY_DNS, "0"])
    assert (proc.returncode, proc.stderr) == (1, TRIED + REFUSED)


UNREADABLE_CONNECT = ("import ctypes, socket\n"
                      "ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE: 0\n"
                      "try:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect("
                      "('192.0.2.1', 9))\n"
                      "except OSError:\n    pass\n")
"""Connects out from a process that made itself non-dumpable, then exits 0."""


def test_on_attempt_fail_fails_a_command_whose_attempt_went_unread(identity: Identity) -> None:
    """Non-root, the recorder cannot read a non-dumpable process's call: counted, not named,
    so under fail the command fails (closed) as one that tried; root reads it."""
    proc = identity.run([identity.python, "-m", "buildjail", "run", "--on-attempt", "fail",
                         "--", SYSTEM_PYTHON, "-c", UNREADABLE_CONNECT])
    assert proc.returncode == 1, proc.stderr
    if identity.kind == "root":
        assert proc.stderr.startswith("buildjail: tried: connect udp 192.0.2.1:9\n")
    else:
        assert proc.stderr.splitlines()[1].startswith(
            'buildjail: on_attempt = "fail", but what the command tried was not recorded: '
            "attempts:connect not recorded in full")


def test_the_tried_line_shows_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    """What the command tried is its choice: one line, nothing sent to the terminal."""
    from buildjail.cli.run import _say

    _say("tried: DNS \x1b]52;c;aGk=\x07\nforged")
    assert capsys.readouterr().err == "buildjail: tried: DNS \\x1b]52;c;aGk=\\x07 forged\n"


BAD_INPUTS = {
    "memory": ["run", "--memory", "lots", "--", "/bin/true"],
    "timeout": ["run", "--timeout", "abc", "--", "/bin/true"],
    "jobs": ["build", "-j", "x", "{project}"],
    "no jobs": ["build", "-j", "0", "{project}"],
    "outdir is a file": ["build", "-o", "{file}", "{project}"],
    "logs is a file": ["build", "--logs", "{file}", "{project}"],
    "report in a missing directory": ["build", "--report", "{tmp}/nope/r.json", "{project}"],
    "report is a directory": ["build", "--report", "{tmp}", "{project}"],
    "json report is a directory": ["run", "--json-report", "{tmp}", "--", "/bin/true"],
    "json report in a missing directory": ["run", "--json-report", "{tmp}/nope/r.json", "--",
                                           "/bin/true"],
    "unknown run option": ["run", "--frobnicate", "--", "/bin/true"],
    "unknown build option": ["build", "--frobnicate", "{project}"],
    "unknown command": ["frobnicate"],
    "no command": [],
    "bad profile": ["audit", "--profile", "bogus"],
    "missing readonly": ["build", "--readonly", "{tmp}/nope", "{project}"],
    "missing writable": ["run", "--writable", "{tmp}/nope", "--", "/bin/true"],
    "missing policy": ["run", "--policy", "{tmp}/nope.toml", "--", "/bin/true"],
    "missing find-links": ["build", "--find-links", "{tmp}/nope", "{project}"],
    "missing source": ["build", "{tmp}/nope"],
    "no project": ["build", "{empty}"],
    "corrupt sdist": ["build", "{corrupt}"],
    "an sdist from an sdist": ["build", "--sdist", "{sdist}"],
    "missing python": ["build", "--python", "{tmp}/nope", "{project}"],
    "python not executable": ["build", "--python", "{file}", "{project}"],
    "python is a directory": ["build", "--python", "{tmp}", "{project}"],
    "python not python": ["build", "--python", "/bin/true", "{project}"],
    "python too old": ["build", "--python", "{old_python}", "{project}"],
    "config-json not JSON": ["build", "--config-json", "{{nope", "{project}"],
    "config-json a list": ["build", "--config-json", "[1, 2]", "{project}"],
    "config-json with -C": ["build", "--config-json", "{{}}", "-Ca=b", "{project}"],
    "bad on-attempt": ["build", "--on-attempt", "maybe", "{project}"],
    "bad fromager on-attempt": ["fromager", "--on-attempt", "maybe", "--", "--help"],
    "bad run on-attempt": ["run", "--on-attempt", "maybe", "--", "/bin/true"],
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2_with_nothing_created(tmp_path: Path,
                                                                case: str) -> None:
    """Every bad value: ``buildjail: ...`` in one line, exit 2, no traceback, nothing made."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[build-system]\nrequires = []\n'
                                            'build-backend = "nothing"\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("a file\n")
    (tmp_path / "demo-1.0.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    sdist = make_sdist(tmp_path, "good")
    old_python = tmp_path / "python3.7"  # answers buildjail's query as a Python 3.7 would
    old_python.write_text("#!/bin/sh\necho '{\"version\": [3, 7, 17], \"implementation\": "
                          "\"cpython\", \"executable\": \"/usr/bin/python3.7\", \"purelib\": "
                          "\"/@buildjail-base@/lib/python3.7/site-packages\"}'\n")
    old_python.chmod(0o755)
    before = sorted(tmp_path.rglob("*"))
    argv = [arg.format(tmp=tmp_path, project=project, file=tmp_path / "file",
                       empty=tmp_path / "empty", corrupt=tmp_path / "demo-1.0.tar.gz",
                       sdist=sdist, old_python=old_python)
            for arg in BAD_INPUTS[case]]
    proc = buildjail(*argv, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("buildjail: "), proc.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no output dir, report or logs


def test_the_check_of_an_sdist_source_extracts_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``buildjail build SDIST`` checks the sdist before building without extracting it (the
    build extracts it once: writing every file twice cost as much as a hook call); a
    corrupt one is still refused there."""
    from buildjail import archives
    from buildjail.cli._checks import check_source

    def extract(*_args: object) -> Path:
        raise AssertionError("the check extracted the sdist")

    monkeypatch.setattr(archives, "extract_sdist", extract)
    check_source(str(make_sdist(tmp_path, "good")))
    corrupt = tmp_path / "demo-1.0.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    with pytest.raises(archives.ArchiveError):
        check_source(str(corrupt))


START_UP_EXCLUDED = (
    # the other subcommands and the frontends only they use
    "buildjail.cli.build", "buildjail.cli.inspect", "buildjail.cli.audit",
    "buildjail.cli.fromager", "buildjail.cli.doctor",
    "buildjail.build", "buildjail.installers", "buildjail.logs", "buildjail.progress",
    "buildjail.pep517", "buildjail.explain", "buildjail.audit", "buildjail.doctor",
    "buildjail.fromager", "buildjail.inspection", "pyproject_hooks", "rich",
    # the standard library's heavier modules the run path has no use for
    "importlib.metadata", "tomllib", "tempfile", "shutil", "zipfile", "tarfile", "subprocess",
    "hashlib", "_hashlib",
    # nor for these, which it once imported (identity's random start is from os.urandom,
    # the interpreter's bin/python* found without glob)
    "random", "glob",
    # nor typing (~2 ms): annotations only, the backend protocol and the reports' TypedDicts
    # imported where they are asked for
    "typing", "buildjail.backends.protocol", "buildjail.backends.messages",
    # nor dataclasses (~7 ms with the inspect, ast, dis and tokenize it imports, and a frozen
    # dataclass takes ten times a named tuple's time to make): records are named tuples
    "dataclasses", "inspect", "ast", "dis", "tokenize",
    # nor binascii, which only the decoys of a run recording attempts need, nor ipaddress
    # (the recording tells loopback addresses by their bytes)
    "binascii", "ipaddress",
)


def test_run_imports_only_what_it_needs() -> None:
    """Start-up time (issue 15), checked by what is imported, not by a clock: after a whole
    ``buildjail run -- /bin/true``, nothing of another subcommand, of a frontend or of the
    standard library's heavier modules is in ``sys.modules``; ``--version`` alone reads the
    package's metadata."""
    code = ("import sys\n"
            "from buildjail.cli import main\n"
            "code = main(['run', '--', '/bin/true'])\n"
            f"excluded = {START_UP_EXCLUDED!r}\n"
            "print(code, sorted(m for m in sys.modules if m.startswith(excluded)))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", capture_output=True,
                          text=True, timeout=120, check=False)
    assert (proc.stdout, proc.stderr) == ("0 []\n", "")
    assert "importlib.metadata" in subprocess.run(
        [sys.executable, "-I", "-c", "import sys\nfrom buildjail.cli import main\n"
         "try:\n    main(['--version'])\nexcept SystemExit:\n    print(sorted(sys.modules))\n"],
        capture_output=True, text=True, timeout=60, check=True).stdout


def test_the_command_keeps_the_collector_off_what_start_up_made() -> None:
    """``python -m buildjail`` (and the console script, ``cli:command``) runs :func:`main`
    with start-up's objects frozen, out of every collection and of the exit's; a library
    caller of ``main`` keeps its collector as it was (the control)."""
    code = ("import gc, os, runpy, sys\n"
            "from buildjail.cli import main\n"
            "main(['run', '--', '/bin/true'])\n"
            "print(gc.isenabled(), gc.get_freeze_count())\n"
            "real_exit, caller = os._exit, os.getpid()\n"
            "def _exit(code):\n"  # run's fast exit, made one the test sees (in the caller:
            "    if os.getpid() != caller:\n"  # the forked supervisor and init exit so too)
            "        real_exit(code)\n"
            "    print('os._exit', code, gc.isenabled(), gc.get_freeze_count() > 1000)\n"
            "    raise SystemExit(code)\n"
            "os._exit = _exit\n"
            "sys.argv = ['buildjail', 'run', '--', '/bin/true']\n"
            "try:\n    runpy.run_module('buildjail', run_name='__main__')\n"
            "except SystemExit as done:\n"
            "    print(done.code)\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", capture_output=True,
                          text=True, timeout=120, check=False)
    assert (proc.stdout, proc.stderr) == ("True 0\nos._exit 0 True True\n0\n", "")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["buildjail"] == "buildjail.cli:command"


def test_help_lists_every_subcommand_and_a_subcommand_parses_alone() -> None:
    """The parser is built with only the subcommand asked for, yet ``--help`` and an unknown
    command still see them all."""
    listed = buildjail("--help").stdout
    assert all(name in listed for name in ("run", "build", "inspect", "audit", "fromager",
                                           "doctor"))
    unknown = buildjail("rn")
    assert unknown.returncode == 2
    assert "invalid choice: 'rn' (choose from 'run', 'build', 'inspect', 'audit'" in (
        unknown.stderr)
    assert buildjail("build", "--help").stdout.startswith("usage: buildjail build ")
