"""``buildjail fromager``: fromager with every isolated step (all PEP 517 hooks) in the sandbox."""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from buildjail import fromager as bj_fromager
from buildjail._linux.identity import PREFERRED_BASE
from buildjail.archives import validate_wheel
from buildjail.audit import run_audit
from buildjail.audit.bait import Bait, processes_inside
from buildjail.audit.runner import PROBE_PROJECT, audit_policy, judge_probe_log, parse_probe_log
from buildjail.audit.vectors import CONFIG_FILE, LIMITS, VECTORS
from buildjail.errors import SandboxSetupError
from buildjail.policy import Policy
from conftest import require_backend
from wheels import make_sdist, simple_index

REPO = Path(__file__).resolve().parent.parent
PYTHON312 = Path("/root/.pyenv/versions/3.12.1/bin/python")
FROMAGER_VERSION = "0.101.0"  # the version these tests ran against
VENV = Path(os.environ.get(
    "BUILDJAIL_TEST_FROMAGER_VENV",
    Path.home() / ".cache" / "buildjail-tests"
    / f"fromager-venv-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}"))
"""Where the fromager venv is kept: one per checkout, so that two checkouts' test runs never
install themselves into the same venv under each other (BUILDJAIL_TEST_FROMAGER_VENV sets it)."""

needs_python312 = pytest.mark.skipif(
    not PYTHON312.exists(), reason=f"fromager needs Python >= 3.12; {PYTHON312} is missing")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
FULL = Policy.profile("full")


# --- the start-up check of the hook point (no fromager needed) -------------------------------

EXTERNAL_COMMANDS = '''
"""A stand-in for fromager.external_commands: the shape buildjail relies on, nothing more."""
import os
import subprocess

NETWORK_ISOLATION = ["/usr/lib/fromager/run_network_isolation.sh"]


def network_isolation_cmd():
    return NETWORK_ISOLATION


def run(cmd, *, cwd=None, extra_environ=None, network_isolation=False, log_filename=None,
        stdin=None):
    env = {**os.environ, **(extra_environ or {})}
    if network_isolation:
        cmd = [*network_isolation_cmd(), *cmd]
    if log_filename:
        with open(log_filename, "w") as log:
            done = subprocess.run(cmd, cwd=cwd, env=env, stdin=stdin, stdout=log,
                                  stderr=subprocess.STDOUT)
        with open(log_filename) as log:
            output = log.read()
    else:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        output = done.stdout.decode()
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, cmd, output)
    return output
'''
"""fromager's ``external_commands`` as far as buildjail uses it (a real module, run for real)."""


def _external_commands(source: str = EXTERNAL_COMMANDS, **changes: Any) -> ModuleType:
    """A module built from *source*, with attributes replaced (or deleted when None)."""
    module = ModuleType("fake_external_commands")
    exec(compile(source, "fake_external_commands.py", "exec"), module.__dict__)
    for name, value in changes.items():
        if value is None:
            delattr(module, name)
        else:
            setattr(module, name, value)
    return module


def test_the_hook_point_check_accepts_fromagers_shape() -> None:
    bj_fromager.check_hook_point(_external_commands())


def _run_without_prefix(cmd: list[str], *, cwd: str | None = None, extra_environ: Any = None,
                        network_isolation: bool = False, log_filename: str | None = None) -> str:
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout.decode()


def _run_without_subprocess(cmd: list[str], *, cwd: str | None = None,
                            extra_environ: Any = None, network_isolation: bool = False,
                            log_filename: str | None = None) -> int:
    return os.spawnv(os.P_WAIT, cmd[0], [*network_isolation_cmd(), *cmd])


def network_isolation_cmd() -> list[str]:
    """A global of this name, as in fromager (for ``_run_without_subprocess``)."""
    return []


@pytest.mark.parametrize(("changes", "reason"), [
    ({"NETWORK_ISOLATION": None}, "NETWORK_ISOLATION is not a list"),
    ({"NETWORK_ISOLATION": ("unshare",)}, "NETWORK_ISOLATION is not a list"),
    ({"network_isolation_cmd": None}, "network_isolation_cmd() is missing"),
    ({"subprocess": None}, "no longer imports subprocess"),
    ({"run": None}, "run() is missing"),
    ({"run": _run_without_prefix}, "no longer calls network_isolation_cmd()"),
    ({"run": _run_without_subprocess}, "no longer calls subprocess.run()"),
])
def test_the_hook_point_check_refuses_a_fromager_without_it(changes: dict[str, Any],
                                                            reason: str) -> None:
    with pytest.raises(SandboxSetupError) as caught:
        bj_fromager.check_hook_point(_external_commands(**changes), "fromager 9.9")
    assert reason in caught.value.reason
    assert "fromager 9.9" in caught.value.reason
    assert caught.value.exit_code == 125


def test_the_hook_point_check_refuses_a_changed_run_signature() -> None:
    def run(cmd: list[str], *, cwd: str | None = None, env: Any = None) -> bytes:
        return subprocess.run([*network_isolation_cmd(), *cmd], check=False).stdout

    module = _external_commands(run=run)
    with pytest.raises(SandboxSetupError, match="no parameter extra_environ, network_isolation"):
        bj_fromager.check_hook_point(module, "fromager 9.9")


def test_fromager_not_installed_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fromager", None)  # makes `import fromager` fail
    monkeypatch.setitem(sys.modules, "fromager.external_commands", None)
    with pytest.raises(SandboxSetupError, match="fromager is not installed"):
        bj_fromager.install(Policy.profile("full"))


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
    policy = Policy.profile("full").with_paths(readonly=["/opt/tool"])
    prefix = bj_fromager.isolation_prefix(policy, "native")
    options = {"-I", "--policy", "--backend", "native", "--sys-path", "--launch-env", "--"}
    launch_env = prefix[prefix.index("--launch-env") + 1]
    carried = prefix[prefix.index("--policy") + 1]
    assert all(os.path.isabs(arg) for arg in prefix if arg not in options | {launch_env, carried})
    assert Policy.from_json(carried) == policy  # the policy whole, parsed once on each side
    assert prefix[-1] == "--"


def test_the_launcher_has_the_exit_code_of_a_set_up_failure() -> None:
    """The launcher imports no buildjail before its ``sys.path`` is set: it hands over."""
    from buildjail.errors import EXIT_SETUP_FAILED

    proc = subprocess.run([*bj_fromager.isolation_prefix(Policy.profile("full"), "native")[:3],
                           "--policy", "{}", "--sys-path", str(Path(bj_fromager.__file__)
                                                               .parents[2]), "--", "true"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == EXIT_SETUP_FAILED, proc.stderr
    assert proc.stderr.startswith("buildjail: not a policy in JSON: "), proc.stderr


# --- isolated steps in fromager's own process (the stand-in module, real sandboxes) ----------

SANDBOX_VIEW = "echo host=$(hostname) uid=$(id -u); /usr/bin/env"


@needs_root
def test_isolated_steps_run_in_process_in_the_sandbox_with_fromagers_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The allow-list stays an allow-list: only fromager's own additions join it."""
    monkeypatch.setenv("FROM_THE_LAUNCH", "x")
    module = bj_fromager.install(FULL, backend="native", external_commands=_external_commands())
    bj_fromager.check_installed(module)
    starter = module.subprocess
    before = starter.served
    output = module.run(["/bin/sh", "-c", SANDBOX_VIEW], cwd="/", network_isolation=True,
                        extra_environ={"PER_PACKAGE_FLAG": "on", "GITHUB_TOKEN": "secret"})
    assert starter.served == before + 1  # no launcher process: it ran here
    assert output.startswith("host=localhost uid=") and "uid=0" not in output.splitlines()[0]
    names = {line.split("=", 1)[0] for line in output.splitlines()[1:]}
    assert "PER_PACKAGE_FLAG" in names  # added by fromager after the launch
    assert "FROM_THE_LAUNCH" not in names  # not on the allow-list
    assert "GITHUB_TOKEN" not in names  # a delete pattern, whoever added it
    # Commands fromager does not isolate are not touched.
    plain = module.run(["/bin/hostname"])
    assert plain.strip() == socket.gethostname() and starter.served == before + 1


@needs_root
def test_an_isolated_step_logs_to_fromagers_file_and_keeps_its_exit_code(
        tmp_path: Path) -> None:
    module = bj_fromager.install(FULL, backend="native", external_commands=_external_commands())
    log = tmp_path / "build.log"
    with pytest.raises(subprocess.CalledProcessError) as caught:
        module.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], cwd="/",
                   network_isolation=True, log_filename=str(log))
    assert caught.value.returncode == 3
    assert log.read_text() == "out\nerr\n" == caught.value.output


@needs_root
def test_a_step_whose_sandbox_cannot_start_fails_closed_with_the_reason(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    missing = tmp_path / "missing"
    policy.write_text(f'extends = "full"\n[filesystem]\nwritable = ["{missing}"]\n')
    module = bj_fromager.install(Policy.from_toml(policy), backend="native",
                                 external_commands=_external_commands())
    with pytest.raises(SandboxSetupError) as refused:
        bj_fromager.check_installed(module)
    assert refused.value.reason == (f"fromager's build steps cannot run in the sandbox: the "
                                    f"writable path {missing} does not exist")
    assert refused.value.fix and refused.value.exit_code == 125
    with pytest.raises(subprocess.CalledProcessError) as caught:
        module.run(["/bin/echo", "must not run"], cwd="/", network_isolation=True)
    assert caught.value.returncode == 125
    assert caught.value.output == (f"buildjail: sandbox not set up: the writable path {missing} "
                                   f"does not exist\n  fix: {refused.value.fix}\n")


MOVED_IMPORT = EXTERNAL_COMMANDS.replace("    env = {", "    import subprocess\n    env = {", 1)
"""A fromager whose ``run()`` imports ``subprocess`` itself: the same names, another path."""


@needs_root
def test_a_fromager_whose_run_bypasses_the_hook_is_refused_at_start_up() -> None:
    module = bj_fromager.install(FULL, backend="native",
                                 external_commands=_external_commands(MOVED_IMPORT))
    with pytest.raises(SandboxSetupError) as caught:
        bj_fromager.check_installed(module, "fromager 9.9")
    assert caught.value.reason == (
        "fromager 9.9 is not supported: fromager.external_commands.run() did not start its "
        "isolated step through the module's subprocess.run(); buildjail cannot sandbox its "
        "build steps")


@needs_root
def test_other_calls_with_the_prefix_still_run_in_the_sandbox_through_the_launcher() -> None:
    module = bj_fromager.install(FULL, backend="native", external_commands=_external_commands())
    starter = module.subprocess
    done = starter.run([*module.NETWORK_ISOLATION, "/bin/hostname"], capture_output=True,
                       text=True, check=True)  # arguments fromager does not use: the launcher
    assert done.stdout.strip() == "localhost" and starter.served == 0


@needs_root
def test_uv_venv_steps_share_a_private_cache_no_other_step_can_write(
        tmp_path: Path, fromager_venv: Path) -> None:
    from buildjail.fromager.steps import StepRunner

    tmp_path.chmod(0o755)
    steps = StepRunner(Policy.profile("full"), "native", os.environ, share_uv_cache=True)
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "ignored")}
    with open(os.devnull, "wb") as null:
        for name in ("one", "two"):
            venv = ["uv", "venv", "--python", sys.executable, "--no-project", str(tmp_path / name)]
            assert steps.run([str(fromager_venv / "bin" / "uv"), *venv[1:]], cwd=str(tmp_path),
                             env=env, output=null.fileno()) == 0
        cache = Path(str(steps.uv_cache))
        assert cache.is_dir() and any(cache.iterdir())  # uv kept what it learnt there
        assert {path.stat().st_uid for path in [cache, *cache.rglob("*")]} == {0}  # handed back
        assert not (tmp_path / "ignored").exists()
        other = steps.run(["/usr/bin/touch", str(cache / "x")], cwd="/",
                          env={**os.environ, "UV_CACHE_DIR": str(cache)}, output=null.fileno())
    assert other != 0 and not (cache / "x").exists()
    steps.close()
    assert not cache.exists()


READ_FROM_CWD = ("import os, sys\ntry:\n    print(open(sys.argv[1]).read())\n"
                 "except OSError as e:\n    print('refused', os.getcwd(), e.strerror)\n")


@needs_root
@pytest.mark.parametrize(("profile", "shown"), [("full", False), ("none", True)])
def test_a_step_started_in_fromagers_directory_runs_in_root_and_sees_none_of_it(
        tmp_path: Path, profile: str, shown: bool) -> None:
    """A query fromager starts without a working directory gets fromager's: never shown.

    The control, under ``none``, reads the settings file.
    """
    from buildjail.fromager.steps import StepRunner

    tmp_path.chmod(0o755)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"token-{os.getpid()}\n")
    settings.chmod(0o644)
    steps = StepRunner(Policy.profile(profile), "native", os.environ)
    output = tmp_path / "output"
    with output.open("wb") as stream:
        code = steps.run(["/usr/bin/python3.11", "-c", READ_FROM_CWD, str(settings)],
                         cwd=str(tmp_path), env=dict(os.environ), output=stream.fileno())
    text = output.read_text()
    assert code == 0, text
    if shown:
        assert f"token-{os.getpid()}" in text
    else:
        assert text.strip() == "refused / No such file or directory", text


# --- on_attempt: a step that tried the network or a decoy --------------------------------------

def _hook_steps(project: Path, steps: Any, output: int) -> Any:
    """pyproject_hooks' caller of *project*'s tinybackend, its hooks run as fromager's steps."""
    from pyproject_hooks import BuildBackendHookCaller

    def step(cmd: Sequence[str], cwd: str | None = None,
             extra_environ: Mapping[str, str] | None = None) -> None:
        code = steps.run(list(cmd), cwd=cwd or os.getcwd(),
                         env={**os.environ, **(extra_environ or {})}, output=output)
        if code:  # as fromager's run() raises
            raise RuntimeError(f"step exited with {code}")

    return BuildBackendHookCaller(str(project), "tinybackend", ["_backend"], runner=step,
                                  python_executable=sys.executable)


@needs_root
@pytest.mark.parametrize("on_attempt", ["warn", "fail"])
def test_a_step_that_tried_a_decoy_fails_under_on_attempt_fail(
        tmp_path: Path, sandbox_backend: str, on_attempt: str,
        caplog: pytest.LogCaptureFixture) -> None:
    from buildjail.fromager.steps import StepRunner

    project = tmp_path / "intree"
    shutil.copytree(REPO / "tests" / "projects" / "intree", project)
    (project / "TRY_IN_build_wheel").write_text("upload.evil.example\n")
    wheels, output = tmp_path / "wheels", tmp_path / "output"
    wheels.mkdir()
    steps = StepRunner(FULL.with_on_attempt(on_attempt), sandbox_backend, os.environ)
    with output.open("wb") as stream:
        caller = _hook_steps(project, steps, stream.fileno())
        if on_attempt == "warn":
            assert caller.build_wheel(str(wheels)) == "intree-2.0-py3-none-any.whl"
        else:
            with pytest.raises(RuntimeError, match="step exited with 1"):
                caller.build_wheel(str(wheels))
    said = [line for line in output.read_text().splitlines() if line.startswith("buildjail:")]
    assert said == ([] if on_attempt == "warn" else [
        "buildjail: the build_wheel hook tried the network or a decoy: read decoy ~/.netrc; "
        'DNS upload.evil.example (on_attempt = "fail")'])
    # Under warn, fromager's log says it instead, the step's output unchanged.
    warned = [record.getMessage() for record in caplog.records
              if record.name == "buildjail.fromager.steps" and record.levelname == "WARNING"]
    assert warned == ([] if on_attempt == "fail" else [
        "buildjail: the build_wheel hook tried: read decoy ~/.netrc; DNS upload.evil.example"])


@needs_root
def test_a_clean_step_passes_under_on_attempt_fail(tmp_path: Path, sandbox_backend: str) -> None:
    from buildjail.fromager.steps import StepRunner

    project = tmp_path / "intree"
    shutil.copytree(REPO / "tests" / "projects" / "intree", project)
    (tmp_path / "wheels").mkdir()
    steps = StepRunner(FULL.with_on_attempt("fail"), sandbox_backend, os.environ)
    caller = _hook_steps(project, steps, 2)
    assert caller.get_requires_for_build_wheel() == []
    assert caller.build_wheel(str(tmp_path / "wheels")) == "intree-2.0-py3-none-any.whl"


@pytest.mark.parametrize(("policy", "backend"), [
    (Policy.profile("network"), "native"), (FULL, "landlock")])
def test_on_attempt_fail_where_steps_record_nothing_fails_closed(
        policy: Policy, backend: str, capfd: pytest.CaptureFixture[str]) -> None:
    from buildjail.fromager.steps import StepRunner, run_launched

    failing = policy.with_on_attempt("fail")
    with pytest.raises(SandboxSetupError, match='on_attempt = "fail", but the'):
        StepRunner(failing, backend, os.environ)
    assert run_launched(failing.to_json(), backend, [], ["/bin/true"]) == 125
    first, fix = capfd.readouterr().err.splitlines()
    assert first.startswith('buildjail: sandbox not set up: on_attempt = "fail", but the')
    assert "--on-attempt warn" in fix


# --- end to end: real fromager bootstraps from PyPI plus the audit's probe project ----------

PROBE_NAME, PROBE_VERSION = "buildjail-probe", "1.0"
PROBE_TOP = f"buildjail_probe-{PROBE_VERSION}"  # fromager's unpack directory: <module>-<version>
PROBE_FILES = ("pyproject.toml", "probe_backend.py", "probes.py")
SELECT_PROBES = "buildjail-probes"  # the probe project's config setting naming a hook's probes
STOPPED_BY = {"fork_bomb": "processes", "memory_hog": "memory", "memory_sysv": "memory",
              "memory_sockets": "memory", "disk_files": "disk"}
"""Probes a limit may stop with their whole hook, and the limit: each gets a bootstrap of its
own, which may fail (the audit likewise gives them a build of their own)."""
IN_ONE_BOOTSTRAP = tuple(vector.id for vector in VECTORS if vector.id not in STOPPED_BY)


_WHERE = ("import buildjail\nfrom importlib.metadata import entry_points\n"
          "hooks = [e for e in entry_points(group='fromager.hooks') if 'buildjail' in e.value]\n"
          "print(buildjail.__file__, 'hooks' if len(hooks) == 2 else 'no hooks')\n")
"""Where the venv's buildjail is, and whether its fromager hooks (``--inspect``) are declared
(an editable install made before they were is installed again)."""


@pytest.fixture(scope="session")
def fromager_venv() -> Path:
    """A Python 3.12 venv with fromager and this checkout (editable), reused across runs."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "fromager").exists():
        subprocess.run([str(PYTHON312), "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q",
                        f"fromager=={FROMAGER_VERSION}"], check=True)
    if not (VENV / "bin" / "uv").exists():  # fromager runs `uv venv` steps: a user has uv
        subprocess.run([str(python), "-m", "pip", "install", "-q", "uv"], check=True)
    where = subprocess.run([str(python), "-c", _WHERE], capture_output=True, text=True,
                           check=False).stdout.strip()
    if not where.startswith(str(REPO / "src")) or not where.endswith(" hooks"):
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO)], check=True)
    return VENV


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local PEP 503 index: its URL and the directory it serves (filled by the test)."""
    root = tmp_path / "index"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/", root
    finally:
        server.shutdown()
        server.server_close()


def _publish_probe_sdist(index: Path, config: dict[str, Any]) -> None:
    """Serve an sdist of the audit's probe project, with the bait's ``audit-config.json``."""
    members = {name: (PROBE_PROJECT / name).read_bytes() for name in PROBE_FILES}
    members[CONFIG_FILE] = json.dumps(config, indent=2).encode()
    members["PKG-INFO"] = (f"Metadata-Version: 2.1\nName: {PROBE_NAME}\n"
                           f"Version: {PROBE_VERSION}\n").encode()
    files = index / "files"
    files.mkdir()
    with tarfile.open(files / f"{PROBE_TOP}.tar.gz", "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{PROBE_TOP}/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    page = index / "simple" / PROBE_NAME
    page.mkdir(parents=True)
    (page / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{PROBE_TOP}.tar.gz">'
        f"{PROBE_TOP}.tar.gz</a></body></html>\n")


def _settings_for(workdir: Path, name: str, index_url: str, more: str = "") -> None:
    """fromager's settings for *name* in *workdir*: its sdists from *index_url*, and *more*."""
    settings = workdir / "overrides" / "settings"
    settings.mkdir(parents=True)
    workdir.chmod(0o755)  # the sandbox's fresh uid must reach the source tree
    (settings / f"{name}.yaml").write_text(
        f"resolver_dist:\n  sdist_server_url: {index_url}\n{more}")


def _probe_workdir(workdir: Path, index_url: str, probes: Sequence[str]) -> Path:
    """Settings fetching the probe project from *index_url*, *probes* in every hook.

    Returns the directory fromager will unpack the probe project's source tree into.
    """
    _settings_for(workdir, "buildjail_probe", index_url,
                  f"config_settings:\n  {SELECT_PROBES}: {' '.join(probes)!r}\n")
    return workdir / "work-dir" / PROBE_TOP / PROBE_TOP


def _bootstrap(venv: Path, workdir: Path, packages: list[str], *, profile: str | None,
               policy: Path | None = None, backend: str = "auto",
               env: Mapping[str, str] | None = None,
               inspect: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``fromager bootstrap`` through buildjail (*profile*; *inspect*: with
    ``--inspect``) or with its own isolation."""
    workdir.mkdir(parents=True, exist_ok=True)
    fromager_args = ["--log-file", str(workdir / "fromager.log"), "bootstrap", *packages]
    if profile is None:
        cmd = [str(venv / "bin" / "fromager"), "--network-isolation", *fromager_args]
    else:
        chosen = ["--policy", str(policy)] if policy else ["--profile", profile]
        cmd = [str(venv / "bin" / "buildjail"), "fromager", *chosen, "--backend", backend,
               *(["--inspect"] if inspect else []), "--", *fromager_args]
    environ = {**os.environ, **(env or {}),
               "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    environ.pop("VIRTUAL_ENV", None)
    return subprocess.run(cmd, cwd=workdir, env=environ, capture_output=True, text=True,
                          timeout=600, check=False)


def _wheels(workdir: Path) -> list[Path]:
    return sorted((workdir / "wheels-repo" / "downloads").glob("*.whl"))


def _log(workdir: Path) -> str:
    path = workdir / "fromager.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _ran_in_process(log: str, profile: str) -> None:
    """Every isolated step fromager logged ran in the sandbox, in fromager's own process."""
    isolated = [line for line in log.splitlines()
                if "running: " in line and "_launcher.py --policy " in line
                and f'"name":"{profile}"' in line]
    in_process = [line for line in log.splitlines() if "ran in the sandbox in-process" in line]
    assert isolated and len(in_process) == len(isolated), (len(in_process), len(isolated))
    assert "run_network_isolation.sh" not in log


def _audit_policy_file(directory: Path) -> Path:
    """``full`` with the audit's low limits, as a policy file (the exhaustion probes hit them)."""
    path = directory / "audit-full.toml"
    limits = "\n".join(f"{name} = {value!r}" for name, value in LIMITS.items())
    path.write_text(f'extends = "full"\nname = "full"\n\n[limits]\n{limits}\n')
    # the frontends record attempts where the policy leaves it open, as the audit does
    assert Policy.from_toml(path).recording_attempts() == audit_policy("full")
    return path


def _accounts_of_runs(bait: Bait) -> list[str]:
    """The account lines a run or the bait could have added: named for the bait, or with an
    id in the ephemeral range (the rest of /etc/passwd is the host's, changing any time)."""
    with open("/etc/passwd") as stream:
        lines = stream.read().splitlines()
    return [line for line in lines if bait.name in line or any(
        field.isdigit() and int(field) >= PREFERRED_BASE for field in line.split(":")[2:4])]


def _leftovers(bait: Bait, directories: Sequence[Path], tmpdir: Path) -> list[str]:
    """What the runs or the bait left on the host: bait, shared memory, processes, the uv
    cache the runs' fromager made in *tmpdir* (their TMPDIR)."""
    found = [path for path in bait.writes.values()
             if os.path.isabs(path) and os.path.lexists(path)]
    for where in ("/etc", "/etc/cron.d", "/home", "/run/secrets", "/dev/shm", "/tmp"):
        with contextlib.suppress(FileNotFoundError):
            found += [f"{where}/{name}" for name in os.listdir(where) if bait.name in name]
    with open("/proc/sysvipc/shm") as stream:
        keys = {int(line.split()[0]) for line in stream.read().splitlines()[1:] if line.strip()}
    if bait.shm_key in keys:
        found.append(f"System V shared memory key {bait.shm_key:#x}")
    if bait.victim is not None and bait.victim.poll() is None:
        found.append(f"the victim process {bait.victim.pid}")
    if bait.workdir.exists():
        found.append(str(bait.workdir))
    found += glob.glob(os.path.join(tmpdir, "buildjail-uv-cache-*"))
    found += [f"pid {pid} in {directory}" for directory in directories
              for pid in processes_inside(directory)]
    return found + bait.cleanup_errors


@pytest.mark.slow
@needs_python312
@needs_root
@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_bootstrap_runs_every_hook_in_the_sandbox_and_blocks_every_probe(
        fromager_venv: Path, local_index: tuple[str, Path], tmp_path: Path, shared_dir: Path,
        backend: str) -> None:
    """``bootstrap six buildjail-probe`` under ``full``: valid wheels, every attack blocked.

    The audit's bait is planted around the runs; the verdicts come from the probe project's
    own lines in fromager's log, judged as the audit judges them, plus what the bait saw.
    """
    require_backend(backend)
    index_url, index = local_index
    policy = _audit_policy_file(tmp_path)
    python = fromager_venv / "bin" / "python"
    tmpdir = shared_dir / "tmp"  # fromager's: where it makes the uv cache it lends
    tmpdir.mkdir()
    bait_dir = Path(tempfile.mkdtemp(prefix="buildjail-fromager-e2e-", dir="/var/lib"))
    bait_dir.rmdir()  # the bait creates it (0755, like the audit's) and removes it
    runs = {"main": tmp_path / "main", **{vector: tmp_path / vector for vector in STOPPED_BY}}
    with Bait(bait_dir, f"{os.getpid()}-fromager", python=str(python)) as bait:
        source = _probe_workdir(runs["main"], index_url, IN_ONE_BOOTSTRAP)
        for vector in STOPPED_BY:
            bait.config(_probe_workdir(runs[vector], index_url, [vector]))  # for its clean-up
        config = bait.config(source)  # the heartbeat of the daemon probe: in the source tree
        _publish_probe_sdist(index, config)
        accounts = _accounts_of_runs(bait)
        env = {**bait.env(), "TMPDIR": str(tmpdir)}

        main = _bootstrap(fromager_venv, runs["main"], ["six", PROBE_NAME], profile="full",
                          policy=policy, backend=backend, env=env)
        stopping = {vector: _bootstrap(fromager_venv, runs[vector], [PROBE_NAME],
                                       profile="full", policy=policy, backend=backend,
                                       env=env)
                    for vector in STOPPED_BY}
        logs = {name: _log(workdir) for name, workdir in runs.items()}
        stopped = {vector: f"the sandbox's {limit} limit stopped it"
                   for vector, limit in STOPPED_BY.items()
                   if f"was stopped by the {limit} limit in the sandbox" in logs[vector]}
        findings = judge_probe_log("\n".join(logs.values()), bait, config, profile="full",
                                   backend=backend, stopped=stopped)
    audit = {finding.vector: finding for finding in run_audit(["full"], [backend]).findings}

    # fromager built everything, and every hook ran in buildjail's sandbox.
    assert main.returncode == 0, main.stdout[-4000:] + main.stderr[-4000:]
    names = {wheel.name.split("-")[0] for wheel in _wheels(runs["main"])}
    assert {"six", "setuptools", "buildjail_probe"} <= names
    for wheel in _wheels(runs["main"]):
        validate_wheel(wheel)
    _ran_in_process(logs["main"], "full")
    # Each probe reported from inside its hooks (so "blocked" is not a probe that never ran) ...
    reported = parse_probe_log(logs["main"])
    assert set(IN_ONE_BOOTSTRAP) <= set(reported), set(IN_ONE_BOOTSTRAP) - set(reported)
    # ... and the exhaustion probes either failed or took their hook down with the limit.
    for vector in STOPPED_BY:
        assert vector in parse_probe_log(logs[vector]) or vector in stopped, (
            vector, logs[vector][-4000:])
        if stopping[vector].returncode != 0:  # only a limit may stop the build
            assert vector in stopped, (vector, logs[vector][-4000:])
    # Every vector is blocked; not applicable only where the audit itself says so, or for
    # the terminal probe: the audit hands it a terminal of its own, fromager's steps have none.
    for finding in findings:
        if finding.verdict == "not_applicable":
            assert finding.vector == "tiocsti" or audit[finding.vector].verdict == (
                "not_applicable"), (finding, audit[finding.vector])
        else:
            assert finding.verdict == "blocked", finding
    assert {finding.vector for finding in findings} == {vector.id for vector in VECTORS}
    # Nothing is left behind: no bait, no process of the builds, no user.
    assert _leftovers(bait, list(runs.values()), tmpdir) == []
    assert _accounts_of_runs(bait) == accounts


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
    _ran_in_process(_log(tmp_path / "network"), "network")


def _fromager_view_bait(workdir: Path, venv: Path) -> dict[str, str]:
    """What a hook of one package must not read: fromager's files, another's tree, its venv.

    The settings and the log are fromager's own (they hold index tokens); the other
    package's tree and the venv's config are planted (removed by the caller).
    """
    other = workdir / "work-dir" / "other_pkg-1.0" / "other_pkg-1.0"
    other.mkdir(parents=True)
    (other / "PKG-INFO").write_text("Name: other_pkg\nVersion: 1.0\n")
    venv_config = venv / f"buildjail-bait-{os.getpid()}-{workdir.name}.conf"
    venv_config.write_text("[global]\nindex-url = https://bj:token@index.invalid/\n")
    return {"fromager_settings": str(workdir / "overrides" / "settings" / "buildjail_probe.yaml"),
            "fromager_log": str(workdir / "fromager.log"),
            "other_package": str(other / "PKG-INFO"),
            "tool_venv_config": str(venv_config),
            "tool_venv_activate": str(venv / "bin" / "activate")}


@pytest.mark.slow
@needs_python312
@needs_root
@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_a_hook_sees_only_its_own_packages_trees(fromager_venv: Path,
                                                 local_index: tuple[str, Path],
                                                 tmp_path: Path, backend: str) -> None:
    """fromager's settings, its log, another package's tree and its venv are absent.

    The control is the same bootstrap under fromager's own ``--network-isolation``: the
    same probe reads every one of them.
    """
    require_backend(backend)
    index_url, index = local_index
    jailed, control = tmp_path / "jailed", tmp_path / "control"
    for workdir in (jailed, control):
        _probe_workdir(workdir, index_url, ["view_system"])
    planted = {workdir: _fromager_view_bait(workdir, fromager_venv)
               for workdir in (jailed, control)}
    # One sdist serves both: its config names the files of both work directories.
    _publish_probe_sdist(index, {"view": {f"{workdir.name}_{key}": path
                                          for workdir, paths in planted.items()
                                          for key, path in paths.items()}})
    try:
        ours = _bootstrap(fromager_venv, jailed, [PROBE_NAME], profile="full", backend=backend)
        theirs = _bootstrap(fromager_venv, control, [PROBE_NAME], profile=None)
    finally:
        for paths in planted.values():
            Path(paths["tool_venv_config"]).unlink()
    assert ours.returncode == 0, ours.stdout[-4000:] + ours.stderr[-4000:]
    assert theirs.returncode == 0, theirs.stdout[-4000:] + theirs.stderr[-4000:]
    _ran_in_process(_log(jailed), "full")
    seen = parse_probe_log(_log(jailed))["view_system"]
    assert seen["outcome"] == "failed", seen
    for path in (path for paths in planted.values() for path in paths.values()):
        assert f"{path}: ENOENT" in seen["detail"], (path, seen["detail"])  # absent, not denied
    # The control: without buildjail, the hook reads every one of them.
    control_seen = parse_probe_log(_log(control))["view_system"]
    assert control_seen["outcome"] == "succeeded", control_seen
    for path in (path for paths in planted.values() for path in paths.values()):
        assert f"of {path}" in control_seen["detail"], (path, control_seen["detail"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
def test_the_launcher_passes_what_fromager_added_but_not_the_launch_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The allow-list stays an allow-list: only fromager's own additions join it."""
    monkeypatch.setenv("FROM_THE_LAUNCH", "x")
    prefix = bj_fromager.isolation_prefix(FULL, "native")
    env = {**os.environ, "PER_PACKAGE_FLAG": "on", "GITHUB_TOKEN": "secret"}
    proc = subprocess.run(
        [sys.executable, "-I", bj_fromager.LAUNCHER, *prefix[3:-1], "--", "/usr/bin/env"],
        cwd="/", env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    names = {line.split("=", 1)[0] for line in proc.stdout.splitlines()}
    assert "PER_PACKAGE_FLAG" in names  # added by fromager after the launch
    assert "FROM_THE_LAUNCH" not in names  # not on the allow-list
    assert "GITHUB_TOKEN" not in names  # a delete pattern, whoever added it


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
@pytest.mark.parametrize("shown", [True, False])
def test_readonly_paths_reach_the_launchers_steps(tmp_path: Path, shown: bool) -> None:
    """``buildjail fromager --readonly DIR``: each step sees DIR; the control, without, not."""
    toolchain = Path(tempfile.mkdtemp(prefix="buildjail-toolchain-", dir="/var/lib"))
    try:
        toolchain.chmod(0o755)
        (toolchain / "VERSION").write_text("toolchain 1\n")
        (toolchain / "VERSION").chmod(0o644)
        policy = FULL.with_paths(readonly=[str(toolchain)] if shown else [])
        prefix = bj_fromager.isolation_prefix(policy, "native")
        proc = subprocess.run(
            [sys.executable, "-I", bj_fromager.LAUNCHER, *prefix[3:-1], "--",
             "/usr/bin/cat", str(toolchain / "VERSION")],
            cwd="/", capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(toolchain)
    if shown:
        assert (proc.returncode, proc.stdout) == (0, "toolchain 1\n"), proc.stderr
    else:
        assert proc.returncode == 1 and "No such file or directory" in proc.stderr, proc.stderr


def test_a_readonly_path_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-toolchain"
    proc = subprocess.run([sys.executable, "-m", "buildjail", "fromager", "--readonly",
                           str(missing), "--", "--help"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"buildjail: --readonly {missing}: no such file or directory\n"


# --- what a step leaves behind is refused before fromager's own code touches it --------------

STEP_SCRIPT = """
import os, sys
from pyproject_hooks import BuildBackendHookCaller
from buildjail.fromager.steps import StepRunner
from buildjail.pep517 import SandboxedHookRunner
from buildjail.policy import Policy

project, backend, mode = sys.argv[1:4]
steps = StepRunner(Policy.profile("full"), backend, launched_with=os.environ)

def step(cmd, cwd=None, extra_environ=None):
    env = {**os.environ, **(extra_environ or {})}
    if mode == "unchecked":  # the control: the hook runner without the check
        SandboxedHookRunner("full", backend=backend, env=env, output=1)(cmd, cwd=cwd)
        return
    code = steps.run(list(cmd), cwd=cwd, env=env, output=1)
    if code:
        raise RuntimeError(f"step exited with {code}")

caller = BuildBackendHookCaller(project, "perimeter_backend", ["_backend"], runner=step,
                                python_executable=sys.executable)
try:
    caller.get_requires_for_build_wheel()
    print("STEP OK")
except RuntimeError as error:
    print("STEP FAILED", error)
"""


def _pkg_info_attack(directory: Path, victim: Path) -> Path:
    from wheels import make_project

    project = make_project(directory / "perimeter", attack={"hooks": {
        "get_requires_for_build_wheel": {"symlink_out": {"PKG-INFO": str(victim)},
                                         "fifo": "fifo"}}})
    (project / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: perimeter\nVersion: 1.0\n")
    return project


FROMAGER_WRITES_PKG_INFO = """
import pathlib, sys
pkg_info = pathlib.Path(sys.argv[1]) / "PKG-INFO"
if not pkg_info.is_file():
    pkg_info.write_text("Metadata-Version: 1.0\\nName: perimeter\\nVersion: 1.0\\n")
"""
"""What fromager's ``sources.ensure_pkg_info`` does after the hooks: ``is_file()``, else write."""


@needs_root
@pytest.mark.parametrize("mode", ["checked", "unchecked"], ids=["refused", "control"])
def test_a_step_cannot_leave_a_link_out_of_its_tree_for_fromager(
        mode: str, identity: Any, sandbox_backend: str, shared_dir: Path) -> None:
    victims = shared_dir / "victims"
    victims.mkdir()
    victim = victims / "created-through-the-link"
    project = _pkg_info_attack(shared_dir, victim)
    identity.own(shared_dir)
    done = identity.run([identity.python, "-c", STEP_SCRIPT, str(project), sandbox_backend,
                         mode], cwd=str(project))
    assert done.returncode == 0, done.stderr
    assert "PERIMETER linked: PKG-INFO -> " in done.stdout, done.stdout
    wrote = identity.run([identity.python, "-c", FROMAGER_WRITES_PKG_INFO, str(project)])
    if mode == "unchecked":
        assert wrote.returncode == 0, wrote.stderr
        assert victim.exists()  # fromager's write went through the hook's link
        assert victim.stat().st_uid == identity.uid
        return
    assert "STEP FAILED step exited with 1" in done.stdout, done.stdout
    assert ("left what code outside the sandbox must not follow (removed): "
            f"{project}/PKG-INFO is a symbolic link to {str(victim)!r}") in done.stdout
    assert f"{project}/fifo is a FIFO" in done.stdout
    assert not victim.exists()
    assert not (project / "fifo").exists()


HOSTILE_INIT = """
import os, socket
try:
    socket.getaddrinfo("exfil.example", 443)
except OSError:
    pass
try:
    open(os.path.expanduser("~/.netrc")).read()
except OSError:
    pass
"""
"""The ``__init__.py`` of the wheel the hostile sdist builds: it tries at import time."""


@pytest.mark.slow
@needs_python312
@needs_root
def test_inspect_fails_the_package_whose_built_wheel_tries_things(
        fromager_venv: Path, local_index: tuple[str, Path], tmp_path: Path) -> None:
    """``buildjail fromager --inspect``: the wheel fromager built is imported in the sandbox
    right after; one that resolves a name and reads ``~/.netrc`` fails its package, a clean
    one passes, and without ``--inspect`` the same hostile build succeeds (the control)."""
    index_url, index = local_index
    runs = {name: tmp_path / name for name in ("hostile", "control", "clean")}
    for name in ("hostile", "control"):
        _settings_for(runs[name], "hostile", index_url)
    _settings_for(runs["clean"], "calm", index_url)
    staging = tmp_path / "sdists"
    staging.mkdir()
    simple_index(index, [
        make_sdist(staging, "hostile", attack={"wheel_files": {"hostile/__init__.py":
                                                               HOSTILE_INIT}}),
        make_sdist(staging, "calm", attack={"wheel_files": {"calm/__init__.py": "X = 1\n"}})])
    hostile = _bootstrap(fromager_venv, runs["hostile"], ["hostile"], profile="full",
                         backend="native", inspect=True)
    control = _bootstrap(fromager_venv, runs["control"], ["hostile"], profile="full",
                         backend="native")
    clean = _bootstrap(fromager_venv, runs["clean"], ["calm"], profile="full",
                       backend="native", inspect=True)
    assert hostile.returncode != 0, hostile.stdout[-4000:] + hostile.stderr[-4000:]
    said = hostile.stdout + hostile.stderr + _log(runs["hostile"])
    assert "buildjail inspect found the wheel hostile-1.0-0-py3-none-any.whl suspicious" in said
    assert "tried: read decoy ~/.netrc; DNS exfil.example" in said
    assert control.returncode == 0, control.stdout[-4000:] + control.stderr[-4000:]
    assert clean.returncode == 0, clean.stdout[-4000:] + clean.stderr[-4000:]
    assert "buildjail inspect:   tried" in _log(runs["clean"])  # inspected: nothing suspicious
    assert "nothing suspicious" in _log(runs["clean"])
