"""The pyproject_hooks runner: every hook in the sandbox, outputs handed back, same errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

from buildjail import HookFailed, SandboxedHookRunner, hook_runner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
PROJECTS = Path(__file__).parent / "projects"


@pytest.fixture
def intree(tmp_path: Path) -> Path:
    """A copy of the in-tree-backend project, in the caller's (private in the sandbox) /tmp."""
    project = tmp_path / "intree"
    shutil.copytree(PROJECTS / "intree", project)
    return project


def _caller(project: Path, runner: SandboxedHookRunner, backend_path: list[str] | None = None,
            backend: str = "tinybackend") -> BuildBackendHookCaller:
    return BuildBackendHookCaller(str(project), backend, backend_path or ["_backend"],
                                  runner=runner, python_executable=sys.executable)


def test_every_hook_runs_in_the_sandbox_and_outputs_come_back(intree: Path,
                                                              tmp_path: Path,
                                                              sandbox_backend: str) -> None:
    runner = hook_runner("full", backend=sandbox_backend, log_path=tmp_path / "build.log")
    caller = _caller(intree, runner)
    wheels, sdists, metadata = (tmp_path / name for name in ("wheels", "sdists", "meta"))
    for directory in (wheels, sdists, metadata):
        directory.mkdir()
    assert caller.get_requires_for_build_wheel() == []
    assert caller.get_requires_for_build_sdist() == []
    assert caller.prepare_metadata_for_build_wheel(str(metadata)) == "intree-2.0.dist-info"
    wheel = caller.build_wheel(str(wheels))
    sdist = caller.build_sdist(str(sdists))
    assert zipfile.ZipFile(wheels / wheel).testzip() is None
    with tarfile.open(sdists / sdist) as archive:
        assert "intree-2.0/PKG-INFO" in archive.getnames()
    hooks = [name for name, _ in runner.results]
    assert hooks == ["get_requires_for_build_wheel", "get_requires_for_build_sdist",
                     "prepare_metadata_for_build_wheel", "build_wheel", "build_sdist"]
    for _, result in runner.results:
        assert result.exit_code == 0
        assert {"namespace:pid", "namespace:net", "seccomp", "filesystem",
                "identity:ephemeral"} <= set(result.layers)
        assert result.uid is not None and result.uid >= 1000
    for path in (wheels / wheel, sdists / sdist, metadata / "intree-2.0.dist-info" / "METADATA"):
        assert path.stat().st_uid == 0, f"{path} was not handed back to the caller"
    assert "tinybackend: building the wheel" in (tmp_path / "build.log").read_text()


def test_control_pyproject_hooks_fallback_builds_the_wheel_twice(tmp_path: Path,
                                                                 sandbox_backend: str) -> None:
    """The flow ``buildjail build`` left: metadata by the fallback, then ``build_wheel``."""
    project = tmp_path / "onecompile"
    shutil.copytree(PROJECTS / "onecompile", project)
    caller = _caller(project, hook_runner("full", backend=sandbox_backend),
                     backend="onecompile_backend")
    metadata, wheels = tmp_path / "meta", tmp_path / "wheels"
    metadata.mkdir()
    wheels.mkdir()
    with pytest.raises(HookMissing):
        caller.prepare_metadata_for_build_wheel(str(metadata), _allow_fallback=False)
    assert not (project / "build_wheel_calls").exists()
    assert caller.prepare_metadata_for_build_wheel(str(metadata), _allow_fallback=True) == (
        "onecompile-1.0.dist-info")
    assert caller.build_wheel(str(wheels)) == "onecompile-1.0-py3-none-any.whl"
    assert len((project / "build_wheel_calls").read_text().splitlines()) == 2


def test_a_failing_hook_raises_calledprocesserror_with_the_log_tail(intree: Path,
                                                                    tmp_path: Path,
                                                                    sandbox_backend: str) -> None:
    (intree / "FAIL_IN_build_wheel").touch()
    log = tmp_path / "build.log"
    caller = _caller(intree, hook_runner("full", backend=sandbox_backend, log_path=log))
    (tmp_path / "wheels").mkdir()
    with pytest.raises(subprocess.CalledProcessError) as caught:
        caller.build_wheel(str(tmp_path / "wheels"))
    error = caught.value
    assert isinstance(error, HookFailed)
    assert error.returncode != 0
    assert "tinybackend was told to fail in build_wheel" in error.log_tail
    assert error.log_path == str(log)
    assert "build_wheel" in str(error) and str(log) in str(error)
    assert list((tmp_path / "wheels").iterdir()) == []


def test_a_missing_backend_raises_backendunavailable(intree: Path, sandbox_backend: str) -> None:
    runner = hook_runner("full", backend=sandbox_backend)
    caller = _caller(intree, runner, backend="no_such_backend")
    with pytest.raises(BackendUnavailable):
        caller.get_requires_for_build_wheel()


def test_the_hook_cannot_write_outside_its_directories(
    intree: Path,
    tmp_path: Path,
    sandbox_backend: str,
) -> None:
    """The caller's /tmp, where the control directory lives, stays private otherwise."""
    sibling = tmp_path / "sibling-build"
    sibling.mkdir()
    (intree / "_backend" / "tinybackend.py").write_text(
        (intree / "_backend" / "tinybackend.py").read_text() + f"""

def get_requires_for_build_sdist(config_settings=None):
    for path in ({str(sibling / 'x')!r}, "/etc/evil", {str(Path.home() / '.bj-test')!r}):
        try:
            open(path, "w").write("x")
            print("WROTE", path, flush=True)
        except OSError as error:
            print("REFUSED", path, error.strerror, flush=True)
    return []
""")
    log = tmp_path / "build.log"
    runner = hook_runner("full", backend=sandbox_backend, log_path=log)
    _caller(intree, runner).get_requires_for_build_sdist()
    text = log.read_text()
    assert "WROTE" not in text
    assert text.count("REFUSED") == 3
    assert not (sibling / "x").exists() and not Path("/etc/evil").exists()
    assert not (Path.home() / ".bj-test").exists()


def test_network_profile_runner(intree: Path, tmp_path: Path, sandbox_backend: str) -> None:
    (tmp_path / "wheels").mkdir()
    runner = hook_runner("network", backend=sandbox_backend)
    wheel = _caller(intree, runner).build_wheel(str(tmp_path / "wheels"))
    assert (tmp_path / "wheels" / wheel).exists()
    assert set(runner.results[0][1].layers) >= {"namespace:net", "namespace:uts"}


def _backend_extra(project: Path, code: str) -> None:
    backend = project / "_backend" / "tinybackend.py"
    backend.write_text(backend.read_text() + "\n\n" + code)


def test_output_json_that_is_not_a_regular_file_is_refused(
    intree: Path,
    sandbox_backend: str,
) -> None:
    """A FIFO behind output.json would hang the caller, who reads it outside the sandbox."""
    from buildjail.pep517 import HookOutputRefusedError

    _backend_extra(intree, """
import sys
def get_requires_for_build_sdist(config_settings=None):
    control = sys.argv[-1]
    os.mkfifo(os.path.join(control, "fifo"))
    os.symlink(os.path.join(control, "fifo"), os.path.join(control, "output.json.tmp"))
    os.replace(os.path.join(control, "output.json.tmp"), os.path.join(control, "output.json"))
    os._exit(0)
""")
    with pytest.raises(HookOutputRefusedError, match="symlink or special file"):
        _caller(intree, hook_runner("full", backend=sandbox_backend)).get_requires_for_build_sdist()


def test_hooks_read_dev_null_not_the_callers_terminal(
    intree: Path,
    tmp_path: Path,
    sandbox_backend: str,
) -> None:
    _backend_extra(intree, """
import sys
def get_requires_for_build_sdist(config_settings=None):
    print("STDIN", os.readlink("/proc/self/fd/0"), repr(sys.stdin.read()), flush=True)
    return []
""")
    log = tmp_path / "build.log"
    read_end, write_end = os.pipe()  # a stdin with data the hook must not see
    os.write(write_end, b"typed by the user\n")
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        runner = hook_runner("full", backend=sandbox_backend, log_path=log)
        _caller(intree, runner).get_requires_for_build_sdist()
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert "STDIN /dev/null ''" in log.read_text()


def test_only_pyproject_hooks_command_of_a_hook_is_decoded() -> None:
    from buildjail.pep517 import HookCommand, hook_name, parse_hook_command

    cmd = ["/venv/bin/python", "/lib/pyproject_hooks/_in_process/_in_process.py",
           "build_wheel", "/tmp/control"]
    assert parse_hook_command(cmd) == HookCommand(*cmd)
    assert hook_name(cmd) == "build_wheel"
    assert parse_hook_command(["uv", "venv", "--python", "/x"]) is None
    assert parse_hook_command(cmd[:3]) is None
    assert hook_name(["/bin/true"]) == "hook"


def test_the_hook_command_is_recognised_from_a_zipped_pyproject_hooks() -> None:
    """Imported from a zip (zipapp, pex), pyproject_hooks runs a temporary copy of its script."""
    from buildjail.pep517 import parse_hook_command

    command = parse_hook_command(["/usr/bin/python3", "/tmp/tmpab12_in_process.py",
                                  "build_wheel", "/tmp/control"])
    assert command is not None and command.hook == "build_wheel"
    assert parse_hook_command(["/usr/bin/python3", "/tmp/setup.py", "build_wheel", "/x"]) is None
    assert parse_hook_command(["/usr/bin/python3", "_in_process.py", "build_wheel"]) is None
