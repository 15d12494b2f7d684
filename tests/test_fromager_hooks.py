"""fromager's proposed sandboxing hooks (PR #1171), driven as its call sequence describes.

setup_sandbox after prepare_source, every build_sdist/build_wheel step through
run_sandboxed, teardown_sandbox in ``finally``: real sandboxes, the audit's probe project as
the package, nothing of buildjail replaced.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from pyproject_hooks import BuildBackendHookCaller

from buildjail import fromager as bj_fromager
from buildjail._linux.identity import BUILD_UID
from buildjail.audit import run_audit
from buildjail.audit.bait import Bait
from buildjail.audit.runner import (
    MAIN_VECTORS,
    PROBE_PROJECT,
    SELECT_SETTING,
    SEPARATE_BUILDS,
    TERMINAL_VECTORS,
    judge_probe_log,
    parse_probe_log,
)
from buildjail.audit.vectors import CONFIG_FILE, VECTORS
from buildjail.errors import BuildjailError, PolicyError
from buildjail.fromager import api, configuration, hooks, unconfined
from buildjail.policy import Policy
from conftest import NONROOT_UID, SYSTEM_PYTHON, require_backend
from test_cleanup import (  # noqa: F401 - own_runs: used by `own`
    EPHEMERAL_BASE,
    SLEEPER,
    OwnRuns,
    _orphan,
    _wait_for,
    _wait_for_uid,
    own_runs,
)
from test_fromager import _audit_policy_file

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
HOOKS = {"setup_sandbox": api.SandboxLifecycle, "teardown_sandbox": api.SandboxLifecycle,
         "run_sandboxed": api.RunCommand, "run_unconfined": api.RunCommand}


@pytest.fixture
def own(own_runs: OwnRuns) -> OwnRuns:  # noqa: F811 - test_cleanup's fixture
    """What the test's own sandboxes could leave behind (see ``test_cleanup.OwnRuns``)."""
    return own_runs


# --- the package directories fromager makes ------------------------------------------------


class Context:
    """fromager's ``WorkContext`` as far as the hooks read it."""

    def __init__(self, work_dir: Path, settings: Any = None) -> None:
        self.work_dir = work_dir
        self.settings = settings


def _package(work: Path, name: str, version: str = "1.0") -> tuple[Requirement, Path]:
    """``work-dir/{name}-{version}/{name}-{version}``, as fromager unpacks a source tree."""
    source = work / f"{name}-{version}" / f"{name}-{version}"
    source.mkdir(parents=True)
    return Requirement(f"{name}=={version}"), source


@pytest.fixture
def work(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """fromager's work directory, its settings file and its log in it; policy ``full``."""
    monkeypatch.delenv(configuration.POLICY_VARIABLE, raising=False)
    monkeypatch.delenv(configuration.BACKEND_VARIABLE, raising=False)
    path = shared_dir / "work-dir"
    path.mkdir()
    (path / "settings.yaml").write_text("external_commands: {}\n")
    (path / "fromager.log").write_text("fromager's log\n")
    return path


def _sh(ctx: Context, req: Requirement, source: Path, script: str, *args: str,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    done = hooks.run_sandboxed(["/bin/sh", "-c", script, *args], ctx=ctx, req=req,
                               sdist_root_dir=source, cwd=source, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert isinstance(done.stdout, str)
    return done


@contextlib.contextmanager
def _sandbox(work: Path, name: str = "pkg") -> Iterator[tuple[Context, Requirement, Path]]:
    """A package's sandbox, set up, then torn down in ``finally`` as fromager does."""
    ctx = Context(work)
    req, source = _package(work, name)
    hooks.setup_sandbox(ctx=ctx, req=req, sdist_root_dir=source)
    try:
        yield ctx, req, source
    finally:
        hooks.teardown_sandbox(ctx=ctx, req=req, sdist_root_dir=source)


@pytest.fixture
def package_sandbox(work: Path) -> Iterator[tuple[Context, Requirement, Path]]:
    """One package's sandbox, set up, and torn down whatever the test did."""
    with _sandbox(work) as package:
        yield package


# --- the API ---------------------------------------------------------------------------------


def test_the_hooks_have_the_proposals_signatures() -> None:
    """Importable as ``buildjail.fromager:NAME``, keyword for keyword the proposal's."""
    for name, protocol in HOOKS.items():
        hook = getattr(bj_fromager, name)
        assert hook is getattr(hooks, name)
        assert inspect.signature(hook).parameters.keys() == inspect.signature(
            protocol.__call__).parameters.keys() - {"self"}, name
    assert [p.kind for p in inspect.signature(hooks.setup_sandbox).parameters.values()] == [
        inspect.Parameter.KEYWORD_ONLY] * 3


def test_importing_the_hooks_imports_no_fromager() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, buildjail.fromager as f; "
                           "f.setup_sandbox; print('fromager' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(("value", "name"), [("", "full"), ("network", "network"),
                                             ("none", "none")])
def test_the_policy_is_a_profile_from_the_environment(value: str, name: str) -> None:
    environ = {configuration.POLICY_VARIABLE: value} if value else {}
    assert configuration.configured_policy(environ) == Policy.profile(name)
    assert configuration.configured_backend({}) == "auto"


def test_the_policy_is_the_same_file_buildjail_fromager_takes(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('extends = "full"\n[filesystem]\nreadonly = ["/opt"]\n')
    policy = configuration.configured_policy({configuration.POLICY_VARIABLE: str(path)})
    assert policy == Policy.load("full", str(path))


def test_on_attempt_comes_from_the_environment_over_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[isolation]\non_attempt = "fail"\n')
    assert configuration.configured_policy({}).on_attempt == "warn"
    on = {configuration.ON_ATTEMPT_VARIABLE: "fail"}
    assert configuration.configured_policy(on) == Policy.profile("full").with_on_attempt("fail")
    from_file = {configuration.POLICY_VARIABLE: str(path)}
    assert configuration.configured_policy(from_file).on_attempt == "fail"
    assert configuration.configured_policy(
        {**from_file, configuration.ON_ATTEMPT_VARIABLE: "warn"}).on_attempt == "warn"


@pytest.mark.parametrize("environ", [
    {configuration.POLICY_VARIABLE: "fulll"},
    {configuration.POLICY_VARIABLE: "/no/such/policy.toml"},
    {configuration.BACKEND_VARIABLE: "docker"},
    {configuration.ON_ATTEMPT_VARIABLE: "loud"}])
def test_a_bad_policy_or_backend_is_one_line(environ: dict[str, str]) -> None:
    with pytest.raises(PolicyError) as error:
        configuration.configured_policy(environ)
        configuration.configured_backend(environ)
    assert "\n" not in str(error.value) and str(error.value)


def test_a_step_without_its_sandbox_set_up_is_refused(work: Path) -> None:
    req, source = _package(work, "pkg")
    with pytest.raises(BuildjailError, match="call setup_sandbox first"):
        hooks.run_sandboxed(["true"], ctx=Context(work), req=req, sdist_root_dir=source)
    hooks.teardown_sandbox(ctx=Context(work), req=req, sdist_root_dir=source)  # a no-op


def test_a_package_directory_outside_the_work_directory_is_refused(work: Path,
                                                                    tmp_path: Path) -> None:
    req, source = _package(tmp_path, "pkg")
    with pytest.raises(BuildjailError, match="not inside fromager's work directory"):
        hooks.setup_sandbox(ctx=Context(work), req=req, sdist_root_dir=source)


# --- run_unconfined: fromager's own environment filter ---------------------------------------


class FromagersFilter:
    """``external_commands: delete_env: ["*_TOKEN"]`` as fromager's ``filter_env`` applies it."""

    def filter_env(self, env: Mapping[str, str]) -> Mapping[str, str]:
        return {name: value for name, value in env.items()
                if not name.upper().endswith("_TOKEN")}


@pytest.mark.parametrize("settings", ["fromager", "without"])
def test_run_unconfined_filters_the_environment_with_fromagers_settings(
        work: Path, settings: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What fromager inherited is filtered; what it added per package is kept."""
    monkeypatch.setenv("CI_TOKEN", "inherited")
    monkeypatch.setenv("BJ_PLAIN", "plain")
    ctx = Context(work, types.SimpleNamespace(external_commands=FromagersFilter())
                  if settings == "fromager" else None)
    req, source = _package(work, "pkg")
    env = {**os.environ, "PKG_TOKEN": "added"}
    done = hooks.run_unconfined(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        ctx=ctx, req=req, sdist_root_dir=source, env=env, stdout=subprocess.PIPE, text=True)
    seen = json.loads(done.stdout)
    assert "CI_TOKEN" not in seen  # fromager's delete_env, or else buildjail's delete patterns
    assert seen["PKG_TOKEN"] == "added" and seen["BJ_PLAIN"] == "plain"
    assert unconfined.settings_filter(ctx) is (
        ctx.settings.external_commands if settings == "fromager" else None)


# --- one package's sandbox ---------------------------------------------------------------


@needs_root
def test_every_step_of_a_package_runs_as_its_one_identity_writing_only_its_directory(
        package_sandbox: tuple[Context, Requirement, Path], work: Path) -> None:
    ctx, req, source = package_sandbox
    root = source.parent
    # the cache file is the identity's only (0600): the second step reads it as the same uid
    first = _sh(ctx, req, source, f'id -u; mkdir -p "$XDG_CACHE_HOME"; umask 077; echo kept > '
                f'"$XDG_CACHE_HOME/k"; touch {root}/dist/out; touch {source}/built 2>/dev/null '
                f'|| echo not-a-hook; touch {work}/escape 2>/dev/null || echo refused')
    second = _sh(ctx, req, source, 'id -u; cat "$XDG_CACHE_HOME/k"')
    uid = hooks.sandbox_of(ctx, source).uid
    assert uid is not None and uid >= EPHEMERAL_BASE
    # inside, both see the fixed uid their user namespace maps onto the package's
    assert first.stdout.split()[0] == str(BUILD_UID)
    assert second.stdout.split() == [str(BUILD_UID), "kept"]
    # Only a hook writes its source tree (as in `buildjail fromager`); nothing else of fromager's.
    assert first.stdout.split()[1:] == ["not-a-hook", "refused"], first.stdout
    assert (root / "dist" / "out").stat().st_uid == 0  # handed back after the step
    assert not (work / "escape").exists()


def test_a_step_that_would_write_outside_its_package_is_refused(
        package_sandbox: tuple[Context, Requirement, Path], tmp_path: Path) -> None:
    """A hook whose pyproject_hooks files lie outside the package's directory never runs."""
    ctx, req, source = package_sandbox
    control = tmp_path / "control"
    control.mkdir()
    done = hooks.run_sandboxed(
        [sys.executable, "/x/_in_process.py", "build_wheel", str(control)], ctx=ctx, req=req,
        sdist_root_dir=source, cwd=source, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode == 125
    assert b"would write outside its package's directory" in done.stdout


def test_a_step_has_one_output_stream(
        package_sandbox: tuple[Context, Requirement, Path]) -> None:
    ctx, req, source = package_sandbox
    with pytest.raises(BuildjailError, match=r"stderr=subprocess\.STDOUT"):
        hooks.run_sandboxed(["true"], ctx=ctx, req=req, sdist_root_dir=source,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@needs_root
def test_a_step_over_its_timeout_raises_timeout_expired(
        package_sandbox: tuple[Context, Requirement, Path]) -> None:
    ctx, req, source = package_sandbox
    with pytest.raises(subprocess.TimeoutExpired):
        _sh(ctx, req, source, "sleep 30", timeout=0.5)


@needs_root
def test_a_failing_step_still_tears_down_and_leaves_nothing(work: Path,
                                                            own: OwnRuns) -> None:
    """A step that fails and leaves a daemon behind; teardown in ``finally``, as fromager's."""
    with _sandbox(work, "failing") as (ctx, req, source):
        done = _sh(ctx, req, source, '(setsid sh -c "sleep 300" "$0" &) ; id -u; exit 3',
                   own.marker)
        assert done.returncode == 3
        assert done.stdout.split()[0] == str(BUILD_UID)
        assert hooks.sandbox_of(ctx, source).uid in own.uids
    own.assert_clean(writable=[source.parent])
    with pytest.raises(BuildjailError, match="call setup_sandbox first"):
        _sh(ctx, req, source, "true")


@needs_root
def test_teardown_kills_what_still_runs_as_the_packages_identity(work: Path,
                                                                 own: OwnRuns) -> None:
    """A process of the package's uid outside any sandbox (as if one escaped): killed."""
    with _sandbox(work) as (ctx, _, source):
        uid = hooks.sandbox_of(ctx, source).uid
        assert uid is not None and uid in own.uids
        _wait_for_uid(_orphan([*SLEEPER, own.marker], uid=uid), uid)
    own.assert_clean(writable=[source.parent])


def test_a_setup_that_fails_leases_nothing(work: Path, own: OwnRuns,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(configuration.BACKEND_VARIABLE, "docker")
    req, source = _package(work, "pkg")
    with pytest.raises(PolicyError):
        hooks.setup_sandbox(ctx=Context(work), req=req, sdist_root_dir=source)
    own.assert_clean(writable=[source.parent])


# --- packages in parallel: distinct identities, none sees another's tree -------------------------


@needs_root
@pytest.mark.parametrize("backend", ["native", "bwrap", "landlock"])
def test_packages_set_up_in_parallel_have_distinct_identities_and_see_none_of_the_rest(
        work: Path, own: OwnRuns, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_backend(backend)
    monkeypatch.setenv(configuration.BACKEND_VARIABLE, backend)
    ctx = Context(work)
    packages = [_package(work, name) for name in ("alpha", "beta")]
    for _, source in packages:
        (source.parent / "dist").mkdir()
        (source.parent / "dist" / "secret.txt").write_text("its own\n")
    others = [str(work / "settings.yaml"), str(work / "fromager.log")]
    barrier = threading.Barrier(len(packages))

    def build(req: Requirement, source: Path) -> tuple[int | None, list[str], str]:
        hooks.setup_sandbox(ctx=ctx, req=req, sdist_root_dir=source)
        try:
            uid = hooks.sandbox_of(ctx, source).uid
            barrier.wait(timeout=30)  # both set up at once, both identities held
            other = next(s for _, s in packages if s != source)
            paths = " ".join([*others, str(other.parent), str(other.parent / "dist")])
            script = f'id -u; cat {source.parent}/dist/secret.txt; for p in {paths}; do '
            done = [_sh(ctx, req, source, script +
                        'test -e "$p" && echo "EXISTS $p"; if [ -d "$p" ]; then ls "$p"; '
                        'else cat "$p"; fi >/dev/null 2>&1 && echo "READ $p"; done; true',
                        own.marker)
                    for _ in range(2)]
            barrier.wait(timeout=30)
            assert all(step.returncode == 0 for step in done), [s.stdout for s in done]
            return uid, [step.stdout.split()[0] for step in done], "".join(
                s.stdout for s in done)
        finally:
            hooks.teardown_sandbox(ctx=ctx, req=req, sdist_root_dir=source)

    with concurrent.futures.ThreadPoolExecutor(len(packages)) as pool:
        results = list(pool.map(lambda package: build(*package), packages))
    uids = [uid for uid, _, _ in results]
    assert uids[0] != uids[1], uids  # distinct identities across packages
    assert all(uid is not None and uid >= EPHEMERAL_BASE for uid in uids)
    for uid, seen, _ in results:  # both steps see the fixed uid mapped onto the package's
        assert seen == [str(uid if backend == "landlock" else BUILD_UID)] * 2  # (or it)
    for _, _, output in results:
        assert "READ" not in output, output
        if backend != "landlock":  # absent from the view; Landlock denies, stat still works
            assert "EXISTS" not in output, output
        assert output.count("its own") == 2, output
    own.assert_clean(writable=[source.parent for _, source in packages])


# --- a killed caller, and a non-root one ---------------------------------------------------------

DRIVER = """
import json, pathlib, subprocess, sys
from buildjail.fromager import run_sandboxed, setup_sandbox, teardown_sandbox

spec = json.loads(sys.argv[1])
ctx = type("Context", (), {"work_dir": pathlib.Path(spec["work"])})()
source, req = pathlib.Path(spec["source"]), spec["req"]  # SYSTEM_PYTHON has no packaging
setup_sandbox(ctx=ctx, req=req, sdist_root_dir=source)
try:
    for script in spec["steps"]:
        done = run_sandboxed(["/bin/sh", "-c", script, spec["marker"]], ctx=ctx, req=req,
                             sdist_root_dir=source, cwd=source, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        print(json.dumps([done.returncode, done.stdout]), flush=True)
finally:
    teardown_sandbox(ctx=ctx, req=req, sdist_root_dir=source)
"""
"""The hooks, called by a process of their own: fromager's, as far as the hooks can tell."""


def _driver(own: OwnRuns, work: Path, source: Path, steps: list[str],
            **popen: Any) -> subprocess.Popen[str]:
    spec = {"work": str(work), "source": str(source), "req": "pkg==1.0", "steps": steps,
            "marker": own.marker}
    caller = subprocess.Popen([*popen.pop("prefix", [sys.executable]), "-c", DRIVER,
                               json.dumps(spec)], text=True, stdout=subprocess.PIPE,
                              cwd="/", start_new_session=True, **popen)
    own.started(caller.pid)
    return caller


@needs_root
def test_a_killed_caller_leaves_nothing(work: Path, own: OwnRuns) -> None:
    """SIGKILL of the process running the hooks, mid-step: no teardown, nothing left."""
    _req, source = _package(work, "pkg")
    started = source.parent / "tmp" / "started"
    caller = _driver(own, work, source, ["true", f'touch {started}; sleep 300'],
                     env=own.env())
    try:
        _wait_for(started)
        uid = started.stat().st_uid  # the step's own file: not handed back while it runs
        own.leased(uid)
        running = own.leftovers()
        assert uid in {owner for _, owner, _ in running["processes"]}, running
        assert running["identity locks"] == [uid], running
        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait(timeout=10)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    own.assert_clean(writable=[source.parent], within=10)


@needs_root
def test_as_non_root_the_hooks_run_each_step_as_the_caller(work: Path, world_src: str,
                                                          own: OwnRuns) -> None:
    os.chmod(work, 0o777)
    _req, source = _package(work, "pkg")
    for path in (source.parent, source):
        os.chown(path, NONROOT_UID, NONROOT_UID)
    caller = _driver(own, work, source,
                     [f"id -u; touch {work}/escape 2>/dev/null || echo refused; "
                      f"touch {source.parent}/dist/out; test -e {work}/fromager.log || "
                      "echo hidden"],
                     prefix=["/usr/bin/setpriv", f"--reuid={NONROOT_UID}",
                             f"--regid={NONROOT_UID}", "--clear-groups", SYSTEM_PYTHON, "-s"],
                     env={**own.env(world_src), "HOME": "/"})
    out, _ = caller.communicate(timeout=120)
    assert caller.returncode == 0, out
    code, text = json.loads(out.splitlines()[-1])
    assert code == 0 and text.split() == [str(NONROOT_UID), "refused", "hidden"], text
    assert (source.parent / "dist" / "out").stat().st_uid == NONROOT_UID
    assert not (work / "escape").exists()
    own.assert_clean(writable=[source.parent])


# --- the audit's probe project as the package -----------------------------------------------


def _hook_caller(ctx: Context, req: Requirement, source: Path, *, python: str,
                 env: dict[str, str], log: Path) -> BuildBackendHookCaller:
    """The probe project's hooks, each run by ``run_sandboxed`` as fromager would run them."""

    def runner(cmd: Sequence[str], cwd: str | None = None,
               extra_environ: Mapping[str, str] | None = None) -> None:
        with open(log, "a") as stream:
            done = hooks.run_sandboxed(cmd, ctx=ctx, req=req, sdist_root_dir=source, cwd=cwd,
                                       env={**env, **(extra_environ or {})},
                                       stdout=stream, stderr=subprocess.STDOUT)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, cmd)

    return BuildBackendHookCaller(str(source), "probe_backend", ["."], runner=runner,
                                  python_executable=python)


def _probe_hooks(ctx: Context, req: Requirement, source: Path, *, python: str,
                 env: dict[str, str], logs: dict[str, Path]) -> None:
    """The audit's hook calls: every probe but the limits' in one, each of those its own."""
    _hook_caller(ctx, req, source, python=python, env=env, log=logs["main"]) \
        .get_requires_for_build_wheel({SELECT_SETTING: [*MAIN_VECTORS, *TERMINAL_VECTORS]})
    for name in SEPARATE_BUILDS:
        caller = _hook_caller(ctx, req, source, python=python, env=env, log=logs[name])
        # a limit may take the hook down: judged from its log
        with contextlib.suppress(subprocess.CalledProcessError):
            caller.build_wheel(str(source.parent / "dist"), {SELECT_SETTING: name})


@pytest.mark.slow
@needs_root
@pytest.mark.parametrize("backend", ["native", "bwrap"])
def test_the_probe_package_built_through_the_hooks_has_every_vector_blocked(
        work: Path, own: OwnRuns, backend: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """setup → get_requires_for_build_wheel and build_wheel via run_sandboxed → teardown."""
    require_backend(backend)
    monkeypatch.setenv(configuration.POLICY_VARIABLE, str(_audit_policy_file(tmp_path)))
    monkeypatch.setenv(configuration.BACKEND_VARIABLE, backend)
    ctx = Context(work)
    req, source = _package(work, "buildjail-probe")
    for name in ("pyproject.toml", "probe_backend.py", "probes.py"):
        (source / name).write_bytes((PROBE_PROJECT / name).read_bytes())
    env_dir = source.parent / "build-env"  # fromager's build environment, in the package's dir
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    bait_dir = Path(tempfile.mkdtemp(prefix="buildjail-hooks-e2e-", dir="/var/lib"))
    bait_dir.rmdir()  # the bait creates it
    logs = {name: tmp_path / f"{name}.log" for name in ("main", *SEPARATE_BUILDS)}
    with Bait(bait_dir, f"{os.getpid()}-hooks", python=python) as bait:
        config = bait.config(source)
        (source / CONFIG_FILE).write_text(json.dumps(config))
        hooks.setup_sandbox(ctx=ctx, req=req, sdist_root_dir=source)
        try:
            # pyproject_hooks' files in the package's directory, as the proposal moves them.
            with monkeypatch.context() as patch:
                patch.setattr(tempfile, "tempdir", str(source.parent / "tmp"))
                _probe_hooks(ctx, req, source, python=python, env=bait.env(), logs=logs)
        finally:
            hooks.teardown_sandbox(ctx=ctx, req=req, sdist_root_dir=source)
        text = {name: path.read_text(errors="replace") if path.exists() else ""
                for name, path in logs.items()}
        stopped = {name: "the sandbox's limit stopped it" for name in SEPARATE_BUILDS
                   if "was stopped by the" in text[name]}
        findings = judge_probe_log("\n".join(text.values()), bait, config, profile="full",
                                   backend=backend, stopped=stopped)
    audit = {finding.vector: finding for finding in run_audit(["full"], [backend]).findings}
    reported = parse_probe_log(text["main"])
    assert set(MAIN_VECTORS) <= set(reported), set(MAIN_VECTORS) - set(reported)
    for name in SEPARATE_BUILDS:  # each reported, or its hook taken down by a limit
        assert name in parse_probe_log(text[name]) or name in stopped, (name, text[name])
    for finding in findings:
        if finding.verdict == "not_applicable":  # no terminal here; else as the audit says
            assert finding.vector == "tiocsti" or audit[finding.vector].verdict == (
                "not_applicable"), (finding, audit[finding.vector])
        else:
            assert finding.verdict == "blocked", (finding, text)
    assert {finding.vector for finding in findings} == {vector.id for vector in VECTORS}
    own.assert_clean(writable=[source.parent])
    assert not list(pathlib.Path(source.parent).glob("home"))
