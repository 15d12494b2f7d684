"""``buildjail build``'s options against pypa/build's: -C, --config-json, --python,
--keep-build-tree, --keep-env, and the causes a failure names.

The recorder project (``tests/projects/recorder``) writes, per hook, the config_settings
it received, the interpreter that ran it and a few variables into ``records.jsonl``, which
its sdist and wheel carry: each test reads back only what that build recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import SYSTEM_PYTHON
from test_build import buildjail, copy_project, no_leftovers  # noqa: F401 - a fixture
from wheels import make_project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
BOTH_FRONTENDS_CALL = ("get_requires_for_build_sdist", "build_sdist",
                       "get_requires_for_build_wheel", "build_wheel")
"""The hooks pypa/build's and buildjail's default (sdist, then its wheel) builds both call."""
PLAIN_PATH = {**os.environ, "PATH": "/usr/bin:/bin"}
"""The caller's environment with a PATH the view shows whole: no hidden directory to name."""


def records(out: Path) -> list[dict[str, Any]]:
    """What the recorder's hooks recorded, from the wheel built into *out*."""
    [wheel] = out.glob("recorder-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("recorder/records.jsonl").decode()
    return [json.loads(line) for line in text.splitlines()]


def settings_by_hook(out: Path) -> dict[str, Any]:
    """The config_settings each hook both frontends call received."""
    got = {record["hook"]: record["config_settings"] for record in records(out)}
    assert set(BOTH_FRONTENDS_CALL) <= set(got), got
    return {hook: got[hook] for hook in BOTH_FRONTENDS_CALL}


def pypa_build(project: Path, out: Path, *args: str) -> None:
    """pypa/build's default build of *project* into *out* (no isolation: nothing to install)."""
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-o", str(out),
                           *args, str(project)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


SETTINGS_CASES = {
    "key=value, a repeated key, a key alone, a leading hyphen": [
        "-Cmode=fast", "-Crepeat=1", "-Crepeat=2", "-Crepeat=3", "-Cflag",
        "-C--global-option=--quiet", "--config-setting=empty="],
    "JSON: nested values": [
        "--config-json", '{"a": {"nested": [1, true, null]}, "b": "x", "c": 2.5}'],
    "JSON: an empty object": ["--config-json", "{}"],
    "none": [],
}


@pytest.mark.parametrize("case", SETTINGS_CASES)
def test_hooks_receive_the_config_settings_pypa_build_passes(tmp_path: Path,
                                                              case: str) -> None:
    arguments = SETTINGS_CASES[case]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    proc = buildjail(str(copy_project("recorder", ours)), "-o", str(ours / "dist"),
                     "--no-index", *arguments)
    assert proc.returncode == 0, proc.stderr
    pypa_build(copy_project("recorder", theirs), theirs / "dist", *arguments)
    received = settings_by_hook(ours / "dist")
    assert received == settings_by_hook(theirs / "dist")
    # and the same hooks, in the same order: no prepare_metadata_for_build_wheel either
    assert [r["hook"] for r in records(ours / "dist")] == [
        r["hook"] for r in records(theirs / "dist")]
    if case.startswith("key=value"):  # what pypa/build's semantics give, spelled out
        assert received["build_wheel"] == {"mode": "fast", "repeat": ["1", "2", "3"],
                                           "flag": "", "--global-option": "--quiet",
                                           "empty": ""}


def system_python() -> dict[str, Any]:
    """What /usr/bin/python3.11 says it is (read here, not assumed)."""
    proc = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import json, os, sys; print(json.dumps("
                           "[list(sys.version_info[:3]), os.path.realpath(sys.executable), "
                           "sys.base_prefix]))"], capture_output=True, text=True, check=True)
    version, executable, prefix = json.loads(proc.stdout)
    return {"version": version, "executable": executable, "base_prefix": prefix}


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"needs {SYSTEM_PYTHON}")
def test_python_makes_every_hook_run_under_that_interpreter(tmp_path: Path) -> None:
    """--python: the hooks of both builds ran under it, from a script in the environment."""
    system = system_python()
    assert system["executable"] != os.path.realpath(sys.executable)  # else nothing is shown
    project = copy_project("recorder", tmp_path)
    out = tmp_path / "dist"
    proc = buildjail(str(project), "-o", str(out), "--no-index", "--python", SYSTEM_PYTHON,
                     "--logs", str(tmp_path / "logs"))
    assert proc.returncode == 0, proc.stderr
    got = records(out)
    assert [r["hook"] for r in got] == [*BOTH_FRONTENDS_CALL[:3], "build_wheel"]
    for record in got:
        assert {key: record[key] for key in system} == system, record
        # pyproject_hooks' script came from the build environment, not buildjail's venv
        assert record["script"].endswith("/buildjail-hooks/_in_process.py"), record
        assert not record["script"].startswith(sys.prefix)
    [log] = (tmp_path / "logs").iterdir()
    version = ".".join(map(str, system["version"]))
    assert f"build environment: Python {version} ({SYSTEM_PYTHON})" in log.read_text()


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"needs {SYSTEM_PYTHON}")
def test_python_without_the_flag_is_buildjails_own(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    proc = buildjail(str(copy_project("recorder", tmp_path)), "-o", str(out), "--no-index",
                     "--wheel")
    assert proc.returncode == 0, proc.stderr
    base = getattr(sys, "_base_executable", sys.executable)
    assert {r["executable"] for r in records(out)} == {os.path.realpath(base)}


def test_keep_env_passes_exactly_the_variables_it_names(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    env = {**os.environ, "BJ_TEST_PLANTED": "kept", "BJ_TEST_OTHER": "dropped",
           "SOURCE_DATE_EPOCH": "1600000000"}
    proc = buildjail(str(copy_project("recorder", tmp_path)), "-o", str(out), "--no-index",
                     "--wheel", "--keep-env", "BJ_TEST_PLANT*", "--logs",
                     str(tmp_path / "logs"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert {json.dumps(r["env"]) for r in records(out)} == {json.dumps(
        {"BJ_TEST_OTHER": None, "BJ_TEST_PLANTED": "kept", "SOURCE_DATE_EPOCH": "1600000000"})}
    [log] = (tmp_path / "logs").iterdir()
    assert "SOURCE_DATE_EPOCH=1600000000 (the caller's, passed to the hooks)" in log.read_text()


@pytest.mark.usefixtures("no_leftovers")
def test_keep_build_tree_keeps_it_outside_the_outdir_and_says_where(tmp_path: Path) -> None:
    out, report = tmp_path / "dist", tmp_path / "report.json"
    proc = buildjail(str(copy_project("recorder", tmp_path)), "-o", str(out), "--no-index",
                     "--keep-build-tree", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(report.read_text())
    tree = Path(entry["build_tree"])
    try:
        assert [line.strip() for line in proc.stdout.splitlines() if "build tree" in line] == [
            f"build tree: {tree}"]
        assert not tree.is_relative_to(out) and tree.parent == tmp_path / "scratch"
        # the sdist built, extracted: the tree its wheel was built in, with what it recorded
        [extracted] = tree.glob("from-sdist-*/recorder-1.0")
        assert (extracted / "records.jsonl").read_text().count("\n") == 4  # 2 + 2 hooks
        assert sorted(path.name for path in out.iterdir()) == [
            "recorder-1.0-py3-none-any.whl", "recorder-1.0.tar.gz"]
    finally:
        shutil.rmtree(tree)


@pytest.mark.usefixtures("no_leftovers")
def test_without_keep_build_tree_nothing_is_kept(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = buildjail(str(copy_project("recorder", tmp_path)), "-o", str(tmp_path / "dist"),
                     "--no-index", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())[0]["build_tree"] is None
    assert "build tree" not in proc.stdout


def test_readonly_shows_a_path_to_the_hooks(shared_dir: Path) -> None:
    """--readonly on build: a file outside the view is readable to the hooks with it only."""
    toolchain, tools = shared_dir / "toolchain", shared_dir / "bin"
    toolchain.mkdir()
    tools.mkdir()
    (toolchain / "version").write_text("toolchain 1\n")
    (tools / "bj-read").write_text(f"#!/bin/sh\nexec cat {toolchain}/version\n")
    (tools / "bj-read").chmod(0o755)
    project = make_project(shared_dir / "reads", "reads", attack={
        "hooks": {"build_wheel": {"tool": str(tools / "bj-read")}}})
    common = [str(project), "--wheel", "--no-index", "--readonly", str(tools)]
    hidden = buildjail(*common, "-o", str(shared_dir / "out1"), "--logs",
                       str(shared_dir / "failed"), env=PLAIN_PATH)
    assert hidden.returncode == 1, hidden.stderr
    assert "No such file or directory" in hidden.stderr
    logs = shared_dir / "logs"
    shown = buildjail(*common, "-o", str(shared_dir / "out2"), "--readonly", str(toolchain),
                      "--logs", str(logs), env=PLAIN_PATH)
    assert shown.returncode == 0, shown.stderr
    [log] = logs.iterdir()
    assert "toolchain 1" in log.read_text()


@pytest.mark.parametrize("address", ["192.0.2.1:443", "static.rust-lang.org:443"])
def test_a_hook_reaching_for_the_network_names_the_cause(tmp_path: Path,
                                                         address: str) -> None:
    """The log's tail shows a connection attempt: the summary names the profile's denial."""
    project = make_project(tmp_path / "downloads", "downloads",
                           attack={"hooks": {"build_wheel": {"connect": address}}})
    logs = tmp_path / "logs"
    proc = buildjail(str(project), "--wheel", "--no-index", "-o", str(tmp_path / "dist"),
                     "--logs", str(logs), env=PLAIN_PATH)
    assert proc.returncode == 1, proc.stderr
    cause = ("likely cause: the build tried to reach the network, which the full profile "
             "denies: vendor its downloads or use --profile network")
    assert [line.strip() for line in proc.stderr.splitlines() if "likely cause" in line] == [
        cause]
    [log] = logs.iterdir()
    assert f"buildjail: {cause}" in log.read_text()


def test_extra_requirements_for_a_hidden_tool_name_its_directory(tmp_path: Path,
                                                                 shared_dir: Path) -> None:
    """maturin without cargo asks for a Rust installer: the hidden PATH entry is named."""
    tools = shared_dir / "toolchain" / "bin"
    tools.mkdir(parents=True)
    project = make_project(tmp_path / "asks", "asks", attack={"requires_wheel": ["bj-rustup"]})
    env = {**os.environ, "PATH": f"{tools}:/usr/bin:/bin"}
    proc = buildjail(str(project), "--wheel", "--no-index", "-o", str(tmp_path / "dist"),
                     "--logs", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 1, proc.stderr
    assert [line.strip() for line in proc.stderr.splitlines() if "likely cause" in line] == [
        f"likely cause: PATH lists {tools}, hidden by the sandbox: --readonly {tools} to show "
        "it"]


def test_a_hook_failing_for_another_reason_names_no_cause(tmp_path: Path) -> None:
    project = make_project(tmp_path / "fails", "fails",
                           attack={"hooks": {"build_wheel": {"fail": "a plain bug"}}})
    proc = buildjail(str(project), "--wheel", "--no-index", "-o", str(tmp_path / "dist"),
                     "--logs", str(tmp_path / "logs"), env=PLAIN_PATH)
    assert proc.returncode == 1, proc.stderr
    assert "a plain bug" in proc.stderr and "likely cause" not in proc.stderr
