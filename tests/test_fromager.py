"""``buildjail fromager``: fromager with every isolated step (all PEP 517 hooks) in the sandbox."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from buildjail import fromager as bj_fromager
from buildjail.archives import validate_wheel
from buildjail.errors import SandboxSetupError

REPO = Path(__file__).resolve().parent.parent
PROJECTS = Path(__file__).parent / "projects"
PYTHON312 = Path("/root/.pyenv/versions/3.12.1/bin/python")
FROMAGER_VERSION = "0.101.0"  # the version these tests ran against
VENV = Path.home() / ".cache" / "buildjail-tests" / "fromager-venv"

needs_python312 = pytest.mark.skipif(
    not PYTHON312.exists(), reason=f"fromager needs Python >= 3.12; {PYTHON312} is missing")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


# --- the start-up check of the hook point (no fromager needed) -------------------------------

def network_isolation_cmd() -> list[str]:
    """The fake module's ``network_isolation_cmd`` (a global name, as in fromager)."""
    return ["/usr/lib/fromager/run_network_isolation.sh"]


def _run(cmd: list[str], *, cwd: str | None = None, extra_environ: Any = None,
         network_isolation: bool = False, log_filename: str | None = None) -> str:
    return " ".join([*network_isolation_cmd(), *cmd]) if network_isolation else ""


def _fake_external_commands(**changes: Any) -> SimpleNamespace:
    """A stand-in for ``fromager.external_commands`` with the hook point buildjail uses."""
    module = SimpleNamespace(NETWORK_ISOLATION=network_isolation_cmd(),
                             network_isolation_cmd=network_isolation_cmd, run=_run)
    for name, value in changes.items():
        if value is None:
            delattr(module, name)
        else:
            setattr(module, name, value)
    return module


def test_the_hook_point_check_accepts_fromagers_shape() -> None:
    bj_fromager.check_hook_point(_fake_external_commands())


def _run_without_prefix(cmd: list[str], *, cwd: str | None = None, extra_environ: Any = None,
                        network_isolation: bool = False, log_filename: str | None = None) -> str:
    return " ".join(cmd)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"NETWORK_ISOLATION": None}, "NETWORK_ISOLATION is not a list"),
    ({"NETWORK_ISOLATION": ("unshare",)}, "NETWORK_ISOLATION is not a list"),
    ({"network_isolation_cmd": None}, "network_isolation_cmd() is missing"),
    ({"run": None}, "run() is missing"),
    ({"run": _run_without_prefix}, "no longer calls network_isolation_cmd()"),
])
def test_the_hook_point_check_refuses_a_fromager_without_it(changes: dict[str, Any],
                                                            reason: str) -> None:
    with pytest.raises(SandboxSetupError) as caught:
        bj_fromager.check_hook_point(_fake_external_commands(**changes), "fromager 9.9")
    assert reason in caught.value.reason
    assert "fromager 9.9" in caught.value.reason
    assert caught.value.exit_code == 125


def test_the_hook_point_check_refuses_a_changed_run_signature() -> None:
    def run(cmd: list[str], *, cwd: str | None = None, env: Any = None) -> str:
        return " ".join([*network_isolation_cmd(), *cmd])

    module = _fake_external_commands(run=run)
    with pytest.raises(SandboxSetupError, match="no parameter extra_environ, network_isolation"):
        bj_fromager.check_hook_point(module, "fromager 9.9")


def test_fromager_not_installed_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fromager", None)  # makes `import fromager` fail
    monkeypatch.setitem(sys.modules, "fromager.external_commands", None)
    with pytest.raises(SandboxSetupError, match="fromager is not installed"):
        bj_fromager.install("full")


@pytest.mark.parametrize(("args", "environ"), [
    (["--no-network-isolation", "bootstrap", "six"], {}),
    (["bootstrap", "six"], {"FROMAGER_NETWORK_ISOLATION": "0"}),
    (["bootstrap", "six"], {"FROMAGER_NETWORK_ISOLATION": "false"}),
])
def test_turning_network_isolation_off_is_refused(args: list[str],
                                                  environ: dict[str, str]) -> None:
    with pytest.raises(SandboxSetupError):
        bj_fromager.check_arguments(args, environ)


def test_a_launcher_that_cannot_start_reports_its_reason() -> None:
    script = ("echo 'buildjail: sandbox not set up: the cwd is not reachable' >&2; "
              "echo '  fix: run from elsewhere' >&2; exit 125")
    with pytest.raises(SandboxSetupError) as caught:
        bj_fromager.check_launcher(["/bin/sh", "-c", script, "sh"])
    assert caught.value.reason.endswith("cannot run in the sandbox: the cwd is not reachable")
    assert caught.value.fix == "run from elsewhere"


def test_network_isolation_is_forced_on_and_helpers_are_absolute() -> None:
    assert bj_fromager.check_arguments(["bootstrap", "six"], {}) == [
        "--network-isolation", "bootstrap", "six"]
    prefix = bj_fromager.isolation_prefix("full", "policy.toml", "native")
    options = {"-I", "--profile", "full", "--policy", "--backend", "native",
               "--sys-path", "--launch-env", "--"}
    launch_env = prefix[prefix.index("--launch-env") + 1]
    assert all(os.path.isabs(arg) for arg in prefix if arg not in options | {launch_env})
    assert prefix[-1] == "--"


# --- end to end: real fromager bootstraps from PyPI plus the hostile probe project ---------

@pytest.fixture(scope="session")
def fromager_venv() -> Path:
    """A Python 3.12 venv with fromager and this checkout (editable), reused across runs."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "fromager").exists():
        subprocess.run([str(PYTHON312), "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q",
                        f"fromager=={FROMAGER_VERSION}"], check=True)
    where = subprocess.run([str(python), "-c", "import buildjail; print(buildjail.__file__)"],
                           capture_output=True, text=True, check=False).stdout.strip()
    if not where.startswith(str(REPO / "src")):
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO)], check=True)
    return VENV


def _hostile_sdist(directory: Path) -> Path:
    """An sdist of tests/projects/hostile, served from a PEP 503 index."""
    files = directory / "files"
    files.mkdir(parents=True)
    sdist = files / "hostile-0.1.tar.gz"
    members = {
        "setup.py": (PROJECTS / "hostile" / "setup.py").read_bytes(),
        "PKG-INFO": b"Metadata-Version: 2.1\nName: hostile\nVersion: 0.1\n",
    }
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"hostile-0.1/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    index = directory / "simple" / "hostile"
    index.mkdir(parents=True)
    (index / "index.html").write_text(
        '<!DOCTYPE html><html><body><a href="../../files/hostile-0.1.tar.gz">'
        "hostile-0.1.tar.gz</a></body></html>\n")
    return sdist


@pytest.fixture
def hostile_index(tmp_path: Path) -> Iterator[str]:
    """The URL of a local simple index that serves only the hostile project."""
    root = tmp_path / "index"
    _hostile_sdist(root)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _bootstrap(venv: Path, workdir: Path, packages: list[str], *, profile: str | None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``fromager bootstrap`` through buildjail (*profile*) or with its own isolation."""
    workdir.mkdir(parents=True, exist_ok=True)
    fromager_args = ["--log-file", str(workdir / "fromager.log"), "bootstrap", *packages]
    if profile is None:
        cmd = [str(venv / "bin" / "fromager"), "--network-isolation", *fromager_args]
    else:
        cmd = [str(venv / "bin" / "buildjail"), "fromager", "--profile", profile, "--",
               *fromager_args]
    environ = {**os.environ, **(env or {}),
               "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    environ.pop("VIRTUAL_ENV", None)
    return subprocess.run(cmd, cwd=workdir, env=environ, capture_output=True, text=True,
                          timeout=300, check=False)


def _wheels(workdir: Path) -> list[Path]:
    return sorted((workdir / "wheels-repo" / "downloads").glob("*.whl"))


@pytest.mark.slow
@needs_python312
@needs_root
def test_bootstrap_runs_every_hook_in_the_sandbox(fromager_venv: Path, hostile_index: str,
                                                  tmp_path: Path) -> None:
    workdir = tmp_path / "full"
    settings = workdir / "overrides" / "settings"
    settings.mkdir(parents=True)
    (settings / "hostile.yaml").write_text(
        f"resolver_dist:\n  sdist_server_url: {hostile_index}\n")
    secret = Path.home() / ".cache" / "buildjail-tests" / "fromager-secret"
    secret.mkdir(parents=True, exist_ok=True)
    netrc = secret / "netrc"
    netrc.write_text("machine pypi.example.org login user password hunter2\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    outside = tmp_path / "outside-pwned"
    targets = {"outside": str(outside), "netrc": str(netrc),
               "port": listener.getsockname()[1]}
    try:
        done = _bootstrap(fromager_venv, workdir, ["six", "hostile"], profile="full",
                          env={"HOSTILE_TARGETS": json.dumps(targets),
                               "PYPI_TOKEN": "must-not-leak"})
    finally:
        listener.close()
    log = (workdir / "fromager.log").read_text() if (workdir / "fromager.log").exists() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    names = {wheel.name.split("-")[0] for wheel in _wheels(workdir)}
    assert {"six", "setuptools", "hostile"} <= names
    for wheel in _wheels(workdir):
        validate_wheel(wheel)
    # Every hook ran through the sandbox launcher ...
    assert "_fromager_isolate.py --profile full" in log
    assert "run_network_isolation.sh" not in log
    # ... and every attack of the probe project failed, in every hook that ran it.
    attempts = [line for line in log.splitlines() if "HOSTILE " in line]
    assert attempts, "the hostile project's hooks did not log"
    assert not [line for line in attempts if "SUCCEEDED" in line], attempts
    for probe in ("write_outside", "write_etc", "read_netrc", "connect"):
        assert f"HOSTILE {probe}: failed" in log
    assert not outside.exists() and not Path("/etc/hostile-build").exists()


@pytest.mark.slow
@needs_python312
@needs_root
def test_network_profile_matches_fromagers_own_network_isolation(fromager_venv: Path,
                                                                 tmp_path: Path) -> None:
    ours = _bootstrap(fromager_venv, tmp_path / "network", ["six"], profile="network")
    theirs = _bootstrap(fromager_venv, tmp_path / "native", ["six"], profile=None)
    assert ours.returncode == 0, ours.stdout[-4000:] + ours.stderr[-4000:]
    assert theirs.returncode == 0, theirs.stdout[-4000:] + theirs.stderr[-4000:]
    our_wheels = [wheel.name for wheel in _wheels(tmp_path / "network")]
    assert our_wheels == [wheel.name for wheel in _wheels(tmp_path / "native")]
    assert {name.split("-")[0] for name in our_wheels} == {"six", "setuptools"}
    for wheel in _wheels(tmp_path / "network"):
        validate_wheel(wheel)
    assert "_fromager_isolate.py --profile network" in (
        tmp_path / "network" / "fromager.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
def test_the_launcher_passes_what_fromager_added_but_not_the_launch_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The allow-list stays an allow-list: only fromager's own additions join it."""
    from buildjail import _fromager_isolate

    monkeypatch.setenv("FROM_THE_LAUNCH", "x")
    prefix = bj_fromager.isolation_prefix("full", None, "native")
    env = {**os.environ, "PER_PACKAGE_FLAG": "on", "GITHUB_TOKEN": "secret"}
    proc = subprocess.run(
        [sys.executable, "-I", _fromager_isolate.__file__, *prefix[3:-1], "--", "/usr/bin/env"],
        cwd="/", env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    names = {line.split("=", 1)[0] for line in proc.stdout.splitlines()}
    assert "PER_PACKAGE_FLAG" in names  # added by fromager after the launch
    assert "FROM_THE_LAUNCH" not in names  # not on the allow-list
    assert "GITHUB_TOKEN" not in names  # a delete pattern, whoever added it
