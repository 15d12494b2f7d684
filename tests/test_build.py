"""``buildjail build``: sandboxed sdists and wheels, clear failures, hostile projects."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import NONROOT_UID, Identity, Runner, give_to, host_processes
from wheels import make_project, make_sdist

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
PROJECTS = Path(__file__).parent / "projects"
EPHEMERAL_BASE = 1_000_000


def buildjail(*args: str, env: dict[str, str] | None = None, cwd: str = "/",
              backend: str = "auto") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildjail", "build", "--backend", backend,
                           *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False,
                          env=env)


Builder = functools.partial[subprocess.CompletedProcess[str]]


@pytest.fixture
def build(sandbox_backend: str) -> Builder:
    """``buildjail build`` with the backend under test."""
    return functools.partial(buildjail, backend=sandbox_backend)


def copy_project(name: str, tmp_path: Path) -> Path:
    project = tmp_path / name
    shutil.copytree(PROJECTS / name, project)
    return project


@pytest.fixture
def no_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Fail if a build leaves work directories or processes of an ephemeral uid behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the builds' temporary directories go here
    yield
    assert {path.name for path in scratch.iterdir()} <= {f"buildjail-logs-{os.getuid()}"}
    time.sleep(0.1)  # this test's sandboxes are the processes that mention its directories
    mine = str(tmp_path).encode()
    assert not [p for p in host_processes() if max(p[1]) >= EPHEMERAL_BASE and mine in p[2]]


def test_source_tree_builds_sdist_then_wheel_from_it(
    tmp_path: Path,
    no_leftovers: None,
    build: Builder,
) -> None:
    project = copy_project("intree", tmp_path)
    out, report = tmp_path / "dist", tmp_path / "report.json"
    proc = build(str(project), "-o", str(out), "--report", str(report), "--no-index")
    assert proc.returncode == 0, proc.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "intree-2.0-py3-none-any.whl", "intree-2.0.tar.gz"]
    [entry] = json.loads(report.read_text())
    assert entry["result"] == "ok" and entry["name"] == "intree" and entry["version"] == "2.0"
    assert entry["backend"] == "tinybackend"
    assert [hook["name"] for hook in entry["hooks"]] == [
        "get_requires_for_build_sdist", "build_sdist", "get_requires_for_build_wheel",
        "build_wheel"]
    assert all(hook["duration"] > 0 and hook["exit_code"] == 0 for hook in entry["hooks"])
    assert {"seccomp", "namespace:net", "filesystem", "identity:ephemeral"} <= set(
        entry["layers"])
    import hashlib

    for output in entry["outputs"]:
        data = Path(output["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
        assert Path(output["path"]).stat().st_uid == 0


def test_wheel_only_and_sdist_input(tmp_path: Path, build: Builder) -> None:
    project = copy_project("intree", tmp_path)
    out = tmp_path / "dist"
    assert build(str(project), "--sdist", "-o", str(out)).returncode == 0
    [sdist] = out.iterdir()
    wheels = tmp_path / "wheels"
    proc = build(str(sdist), "-o", str(wheels))
    assert proc.returncode == 0, proc.stderr
    assert [path.name for path in wheels.iterdir()] == ["intree-2.0-py3-none-any.whl"]


ONE_COMPILE_HOOKS = ["get_requires_for_build_wheel", "build_wheel"]
"""As pypa/build: no prepare_metadata_for_build_wheel before build_wheel."""


def build_onecompile(tmp_path: Path, build: Builder, metadata_hook: str | None = None,
                     ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], list[str]]:
    """Build the one-compile project's wheel (with a metadata hook stating *metadata_hook*).

    Returns the run, its report and the backend's record of its ``build_wheel`` calls.
    """
    project = copy_project("onecompile", tmp_path)
    if metadata_hook is not None:
        (project / "METADATA_HOOK").write_text(metadata_hook)
    report = tmp_path / "report.json"
    proc = build(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--report", str(report),
                 "--no-index")
    [entry] = json.loads(report.read_text())
    return proc, entry, (project / "build_wheel_calls").read_text().splitlines()


def test_a_backend_without_a_metadata_hook_builds_its_wheel_once(
    tmp_path: Path, no_leftovers: None, build: Builder,
) -> None:
    proc, entry, calls = build_onecompile(tmp_path, build)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["build_wheel metadata_directory=None"]
    assert [path.name for path in (tmp_path / "dist").iterdir()] == [
        "onecompile-1.0-py3-none-any.whl"]
    assert (entry["name"], entry["version"]) == ("onecompile", "1.0")
    assert [hook["name"] for hook in entry["hooks"]] == ONE_COMPILE_HOOKS


def test_a_metadata_hook_is_not_called_before_build_wheel(
    tmp_path: Path, build: Builder,
) -> None:
    """What it would state comes from the same backend as the wheel: a hook call for
    nothing. The name and version reported are the checked wheel's."""
    proc, entry, calls = build_onecompile(tmp_path, build, metadata_hook="other 9.9")
    assert proc.returncode == 0, proc.stderr
    assert [hook["name"] for hook in entry["hooks"]] == ONE_COMPILE_HOOKS
    assert calls == ["build_wheel metadata_directory=None"]
    assert (entry["name"], entry["version"]) == ("onecompile", "1.0")


def test_setuptools_project_with_a_local_wheelhouse(
    tmp_path: Path,
    wheelhouse: Path,
    build: Builder,
) -> None:
    project = copy_project("simple", tmp_path)
    out = tmp_path / "dist"
    proc = build(str(project), "-o", str(out), "--no-index", "--find-links",
                     str(wheelhouse))
    assert proc.returncode == 0, proc.stderr
    names = sorted(path.name for path in out.iterdir())
    assert names == ["simple-1.0-py3-none-any.whl", "simple-1.0.tar.gz"]
    with zipfile.ZipFile(out / names[0]) as wheel:
        assert "simple/__init__.py" in wheel.namelist()


@pytest.mark.parametrize(
    ("setup", "step", "message"),
    [
        (lambda p: (p / "pyproject.toml").unlink(), "finding the project",
         "neither a pyproject.toml nor a setup.py"),
        (lambda p: (p / "pyproject.toml").write_text("[build-system\nrequires = 1"),
         "reading pyproject.toml", "invalid TOML"),
        (lambda p: (p / "pyproject.toml").write_text(
            (p / "pyproject.toml").read_text().replace('"tinybackend"', '"nope_backend"')),
         "importing the build backend", "nope_backend cannot be imported"),
        (lambda p: (p / "FAIL_IN_build_wheel").touch(), "the build_wheel hook",
         "tinybackend was told to fail in build_wheel"),
    ],
    ids=["no-project", "broken-pyproject", "missing-backend", "failing-hook"],
)
def test_clear_failures(tmp_path: Path, setup: Any, step: str, message: str,
                        no_leftovers: None) -> None:
    project = copy_project("intree", tmp_path)
    setup(project)
    out = tmp_path / "dist"
    proc = buildjail(str(project), "--wheel", "-o", str(out))
    if step == "finding the project":  # checked before any build starts: bad input
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr and not out.exists()
        return
    assert proc.returncode == 1
    assert f"intree: {step} failed" in proc.stderr, proc.stderr
    assert message in proc.stderr
    assert not out.exists() or not list(out.iterdir())


def test_failing_hook_shows_log_tail_and_where_the_log_is(tmp_path: Path, build: Builder) -> None:
    project = copy_project("intree", tmp_path)
    (project / "FAIL_IN_build_wheel").touch()
    proc = build(str(project), "--wheel", "-o", str(tmp_path / "dist"))
    assert "tinybackend: about to fail in build_wheel" in proc.stderr
    log = next(line.split("log: ", 1)[1] for line in proc.stderr.splitlines()
               if line.strip().startswith("log: "))
    assert "Traceback" in Path(log).read_text()
    Path(log).unlink()


def test_unreachable_index(tmp_path: Path, no_leftovers: None) -> None:
    project = copy_project("simple", tmp_path)
    with socket.socket() as sock:  # a local port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = buildjail(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--index-url",
                     f"http://127.0.0.1:{port}/simple",
                     env={**os.environ, "PIP_CONFIG_FILE": os.devnull})  # no local find-links
    assert proc.returncode == 1
    assert "simple: preparing the wheel build environment failed" in proc.stderr
    assert "is the index reachable" in proc.stderr


def _hostile_sdist(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "evil-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("evil-1.0/PKG-INFO")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"x\n\n\n"))
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink-out", "device"])
def test_hostile_sdists_are_refused(tmp_path: Path, kind: str, no_leftovers: None) -> None:
    member = tarfile.TarInfo({"traversal": "evil-1.0/../../escaped",
                              "absolute": "/tmp/escaped-abs",
                              "symlink-out": "evil-1.0/link",
                              "device": "evil-1.0/dev"}[kind])
    if kind == "symlink-out":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    if kind == "device":
        member.type, member.devmajor, member.devminor = tarfile.CHRTYPE, 1, 3
    sdist = _hostile_sdist(tmp_path, member, b"x" if kind in ("traversal", "absolute") else b"")
    proc = buildjail(str(sdist), "-o", str(tmp_path / "dist"))
    # Checked before anything is built, with the build's own bounded extractor: bad input.
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert proc.stderr.startswith(f"buildjail: {sdist}: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-abs").exists()
    assert not (tmp_path / "dist").exists()


def test_hostile_project_builds_while_every_attempt_fails(tmp_path: Path, wheelhouse: Path,
                                                          no_leftovers: None,
                                                          build: Builder) -> None:
    project = copy_project("hostile", tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    netrc = Path.home() / ".netrc-buildjail-test"
    netrc.write_text("machine example.org login me password secret\n")
    netrc.chmod(0o600)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    targets = {"outside": str(outside / "pwned"), "netrc": str(netrc),
               "port": listener.getsockname()[1], "heartbeat": "heartbeat.txt"}
    logs = tmp_path / "logs"
    try:
        proc = build(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--no-index",
                         "--find-links", str(wheelhouse), "--logs", str(logs),
                         "--policy", str(_keep_env_policy(tmp_path)),
                         env={**os.environ, "HOSTILE_TARGETS": json.dumps(targets)})
    finally:
        netrc.unlink()
        listener.close()
    assert proc.returncode == 0, proc.stderr
    log = (logs / "hostile.log").read_text()
    attempts = [line for line in log.splitlines() if line.startswith("HOSTILE ")]
    assert attempts, log
    assert not [line for line in attempts if "SUCCEEDED" in line and "daemon" not in line]
    assert any("write_outside: failed" in line for line in attempts)
    assert any("read_netrc: failed" in line for line in attempts)
    assert not (outside / "pwned").exists() and not Path("/etc/hostile-build").exists()
    heartbeat = project / "heartbeat.txt"
    assert heartbeat.exists(), "the daemon never ran: the test would prove nothing"
    size = heartbeat.stat().st_size
    time.sleep(0.5)
    assert heartbeat.stat().st_size == size, "the daemon outlived the hook"


def _keep_env_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.toml"
    policy.write_text('extends = "full"\n[environment]\nkeep = ["HOSTILE_*"]\n')
    return policy


def test_a_hook_naming_a_host_file_as_its_wheel_is_refused(tmp_path: Path,
                                                           no_leftovers: None,
                                                           build: Builder) -> None:
    """The backend's return value is untrusted: root must not check and move a host file."""
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    intree_wheel = tmp_path / "dist0"
    assert build(str(copy_project("intree", tmp_path)), "--wheel", "-o",
                     str(intree_wheel)).returncode == 0
    victim = victim_dir / "intree-2.0-py3-none-any.whl"
    shutil.move(str(next(intree_wheel.iterdir())), victim)
    project = tmp_path / "thief"
    shutil.copytree(PROJECTS / "intree", project)
    backend = project / "_backend" / "tinybackend.py"
    backend.write_text(backend.read_text() + f"""

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return {str(victim)!r}
""")
    proc = build(str(project), "--wheel", "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "checking the hook's output failed: not a plain file name" in proc.stderr
    assert victim.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_build_environment_installer(tmp_path: Path, wheelhouse: Path, installer: str) -> None:
    """``--installer`` says which installer runs, whatever is on PATH (here: no uv)."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "uv").exists())
    project = copy_project("simple", tmp_path)
    logs = tmp_path / "logs"
    proc = buildjail(str(project), "--wheel", "-o", str(tmp_path / "dist"), "--no-index",
                     "--find-links", str(wheelhouse), "--logs", str(logs),
                     "--installer", installer,
                     env={**os.environ, "PATH": path, "PIP_CONFIG_FILE": os.devnull})
    assert proc.returncode == 0, proc.stderr
    first_install = next(line for line in (logs / "simple.log").read_text().splitlines()
                         if line.startswith("$ "))
    expected = "/uv pip install --no-config --python " if installer == "uv" else (
        " -m pip install ")
    assert expected in first_install, first_install
    # Never the build environment's own interpreter: a trusted one installs into its prefix.
    assert "/bin/python " not in first_install.split(" -- ")[0].replace(sys.executable, "")
    assert ("--prefix " if installer == "uv" else "--target ") in first_install


def test_a_non_root_user_builds_in_a_user_namespace(shared_dir: Path, nonroot_site: Path,
                                                    world_src: str, build: Builder) -> None:
    project = shared_dir / "intree"
    shutil.copytree(PROJECTS / "intree", project)
    out = shared_dir / "out"
    out.mkdir()
    for path in [project, *project.rglob("*"), out]:
        os.chown(path, 4242, 4242)
    proc = subprocess.run(
        ["/usr/bin/setpriv", "--reuid=4242", "--regid=4242", "--clear-groups",
         "/usr/bin/python3.11", "-m", "buildjail", "build", "--backend", build.keywords["backend"],
         str(project), "-o", str(out),
         "--no-index", "--report", str(out / "report.json")],
        cwd="/", capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
             "PYTHONPATH": f"{world_src}:{nonroot_site}"})
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads((out / "report.json").read_text())
    assert "namespace:user" in entry["layers"] and "identity:user-namespace" in entry["layers"]
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".json") == [
        "intree-2.0-py3-none-any.whl", "intree-2.0.tar.gz"]
    assert {p.stat().st_uid for p in out.iterdir()} == {4242}


def test_a_hook_failing_on_a_hidden_tool_names_the_flag_that_fixes_it(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """A tool on the caller's PATH outside the view: the cause named, with the --readonly
    that makes it build, in the summary and the log."""
    tools = shared_dir / "toolchain" / "bin"
    tools.mkdir(parents=True)
    (tools / "bj-tool").write_text("#!/bin/sh\necho the tool ran\n")
    (tools / "bj-tool").chmod(0o755)
    project = make_project(shared_dir / "needstool", "needstool",
                           attack={"hooks": {"build_wheel": {"tool": "bj-tool"}}})
    identity.own(shared_dir)
    env = {"PATH": f"{tools}:{identity.environment()['PATH']}"}
    common = [str(project), "--wheel", "--logs", str(shared_dir / "logs")]
    failing = identity.buildjail(*common, "-o", str(shared_dir / "out1"),
                                 backend=sandbox_backend, env=env)
    assert failing.returncode == 1, failing.stderr
    cause = (f"likely cause: PATH lists {tools}, hidden by the sandbox: --readonly {tools} "
             "to show it")
    causes = [line.strip() for line in failing.stderr.splitlines() if "likely cause" in line]
    assert cause in causes, failing.stderr
    [log] = (shared_dir / "logs").iterdir()
    assert f"buildjail: {cause}" in log.read_text()
    fixed = identity.buildjail(*common, "-o", str(shared_dir / "out2"), "--readonly",
                               str(tools), backend=sandbox_backend, env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert "likely cause" not in fixed.stderr
    assert [path.name for path in (shared_dir / "out2").iterdir()] == [
        "needstool-1.0-py3-none-any.whl"]


# --- batches: one bad package fails alone; siblings cannot see each other -------------------

def test_one_bad_package_fails_alone_and_the_batch_completes(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    good = make_project(shared_dir / "good", "good")
    bad_utf8 = make_project(shared_dir / "badutf8", "badutf8")
    (bad_utf8 / "pyproject.toml").write_bytes(b'[project]\nname = "\xff\xfe"\n')
    int_requirement = make_project(shared_dir / "intreq", "intreq",
                                   attack={"requires_wheel": [1]})
    bad_path = make_project(shared_dir / "badpath", "badpath")
    (bad_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "perimeter_backend"\n'
        'backend-path = ["../../etc"]\n')
    out, report = shared_dir / "out", shared_dir / "report.json"
    identity.own(shared_dir)
    proc = identity.buildjail(str(bad_utf8), str(int_requirement), str(good), str(bad_path),
                              "--wheel", "-o", str(out), "-j", "2", "--report", str(report),
                              backend=sandbox_backend)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 3, proc.stderr
    assert "badutf8: reading pyproject.toml failed: not valid UTF-8" in failed[0]
    assert ("intreq: checking the build requirements failed: the "
            "get_requires_for_build_wheel hook asked for 1, which is not a string") in failed[1]
    assert failed[2].startswith("FAILED badpath: ")
    entries = json.loads(report.read_text())
    assert [entry["result"] for entry in entries] == ["error", "error", "ok", "error"]
    assert [path.name for path in out.iterdir()] == ["good-1.0-py3-none-any.whl"]


def test_parallel_builds_cannot_read_each_others_trees(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """``-j 2`` with TMPDIR outside /tmp: as non-root both builds run as the same uid."""
    temporary = shared_dir / "tmp"
    temporary.mkdir()
    secret = f"SIBLING-SECRET-{os.getpid()}"
    alpha = make_sdist(shared_dir, "alpha", attack={"hooks": {"get_requires_for_build_wheel": {
        "search": f"{temporary}/buildjail-*/**/SECRET.txt"}}})
    beta = make_sdist(shared_dir, "beta", extra={"SECRET.txt": secret.encode()},
                      attack={"hooks": {"get_requires_for_build_wheel": {"sleep": 6}}})
    logs = shared_dir / "logs"
    identity.own(shared_dir)
    proc = identity.buildjail(str(alpha), str(beta), "-j", "2", "-o", str(shared_dir / "out"),
                              "--logs", str(logs), backend=sandbox_backend,
                              env={"TMPDIR": str(temporary)})
    assert proc.returncode == 0, proc.stderr
    log = (logs / "alpha-1.0.tar.gz.log").read_text()
    assert "PERIMETER found: nothing" in log, log
    assert secret not in log


def test_control_without_the_mask_a_sandbox_of_the_same_user_reads_the_sibling(
        run_sandbox: Runner, identity_kind: str, shared_dir: Path) -> None:
    if identity_kind == "root":
        pytest.skip("as root each build has its own uid: root's 0700 work directories were "
                    "never readable by a sibling")
    sibling = shared_dir / "tmp" / "buildjail-sibling" / "src"
    sibling.mkdir(parents=True)
    (sibling / "SECRET.txt").write_text("the sibling's source\n")
    give_to(NONROOT_UID, shared_dir / "tmp")
    (shared_dir / "tmp" / "buildjail-sibling").chmod(0o700)  # as mkdtemp makes it
    # The allow-list view hides the batch's work directory; shown (as the old view showed
    # the whole host), the same user's sandbox reads its sibling's tree.
    result = run_sandbox(["/bin/cat", str(sibling / "SECRET.txt")], cwd="/", capture=True,
                         readonly=[str(shared_dir / "tmp")])
    assert result["exit_code"] == 0, result
    assert result["stdout"] == "the sibling's source\n"


# --- --on-attempt: a build that tried the network or a decoy -----------------------------

def _thief(tmp_path: Path, hook: str = "build_wheel") -> Path:
    """intree, whose *hook* reads ~/.netrc and resolves upload.evil.example, then succeeds."""
    project = copy_project("intree", tmp_path)
    (project / f"TRY_IN_{hook}").write_text("upload.evil.example\n")
    return project


TRIED = "read decoy ~/.netrc; DNS upload.evil.example"


def test_on_attempt_fail_fails_the_package_delivers_nothing_and_says_why(
        tmp_path: Path, build: Builder, no_leftovers: None) -> None:
    """The sdist was clean and published; the wheel built from it tried: both are gone."""
    project = _thief(tmp_path)
    out, report = tmp_path / "dist", tmp_path / "report.json"
    proc = build(str(project), "-o", str(out), "--report", str(report), "--no-index",
                 "--on-attempt", "fail")
    assert proc.returncode == 1, proc.stderr
    reason = (f'intree: the build_wheel hook failed: it tried the network or a decoy: {TRIED} '
              '(on_attempt = "fail")')
    assert f"FAILED {reason}\n" in proc.stderr, proc.stderr
    assert list(out.iterdir()) == []
    [entry] = json.loads(report.read_text())
    assert entry["result"] == "error" and entry["error"] == reason
    assert entry["step"] == "the build_wheel hook" and entry["outputs"] == []
    tried = {hook["name"]: hook["attempts"] for hook in entry["hooks"]}
    assert sorted(map(str, tried["build_wheel"])) == [  # in the order the init read them
        str({"kind": "credential", "path": "~/.netrc"}),
        str({"kind": "dns", "name": "upload.evil.example"})]


def test_on_attempt_fail_stops_at_the_hook_that_tried(tmp_path: Path, build: Builder) -> None:
    project = _thief(tmp_path, "build_sdist")
    out = tmp_path / "dist"
    proc = build(str(project), "-o", str(out), "--no-index", "--on-attempt", "fail")
    assert proc.returncode == 1
    assert "intree: the build_sdist hook failed: it tried the network or a decoy" in proc.stderr
    assert list(out.iterdir()) == []
    assert "build_wheel" not in proc.stderr


def test_on_attempt_warn_is_the_default_and_builds(tmp_path: Path, build: Builder) -> None:
    project = _thief(tmp_path)
    for number, extra in enumerate(([], ["--on-attempt", "warn"])):
        out = tmp_path / f"dist{number}"
        proc = build(str(project), "-o", str(out), "--no-index", *extra)
        assert proc.returncode == 0, proc.stderr
        assert sorted(path.name for path in out.iterdir()) == [
            "intree-2.0-py3-none-any.whl", "intree-2.0.tar.gz"]
        assert f"       tried: {TRIED}\n" in proc.stdout, proc.stdout


def test_on_attempt_fail_builds_a_clean_project(tmp_path: Path, build: Builder) -> None:
    out = tmp_path / "dist"
    proc = build(str(copy_project("intree", tmp_path)), "-o", str(out), "--no-index",
                 "--on-attempt", "fail")
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.iterdir())) == 2 and "tried:" not in proc.stdout


@pytest.mark.parametrize(("args", "reason"), [
    (["--profile", "network"], "the policy network records no attempts"),
    (["--profile", "none"], "the policy none records no attempts"),
    (["--backend", "landlock"], "the landlock backend cannot record the attempts: "
                                "attempts:dns not recorded"),
    (["--policy", "{recording_without_net}"], "records no attempts"),
])
def test_on_attempt_fail_where_nothing_is_recorded_fails_closed(
        tmp_path: Path, args: list[str], reason: str) -> None:
    """Nothing can be seen, so nothing passes: exit 125 before anything is built."""
    out = tmp_path / "dist"
    policy = tmp_path / "policy.toml"  # recording asked for, with the host's network
    policy.write_text('[isolation]\nrecord_attempts = true\n'
                      'namespaces = ["mount", "pid", "ipc", "uts", "cgroup"]\n')
    args = [arg.format(recording_without_net=policy) for arg in args]
    proc = buildjail(str(_thief(tmp_path)), "-o", str(out), "--no-index",
                     "--on-attempt", "fail", *args)
    assert proc.returncode == 125, proc.stderr
    first, fix = proc.stderr.splitlines()
    assert first.startswith('buildjail: sandbox not set up: on_attempt = "fail", but ')
    assert reason in first
    assert fix.strip().startswith("fix: ") and "--on-attempt warn" in fix
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(("policy", "args", "message"), [
    ('[isolation]\non_attempt = "sometimes"\n', [], 'on_attempt must be "warn" or "fail"'),
    ("[isolation]\nrecord_attempts = false\n", ["--on-attempt", "fail"],
     "record_attempts is false"),
], ids=["bad value", "fail without recording"])
def test_a_bad_on_attempt_is_one_line_exit_2(tmp_path: Path, policy: str, args: list[str],
                                             message: str) -> None:
    """The values themselves: tests/test_policy.py."""
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    out = tmp_path / "dist"
    proc = buildjail(str(copy_project("intree", tmp_path)), "-o", str(out),
                     "--policy", str(path), *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and not out.exists()
