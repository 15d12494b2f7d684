"""What ``buildjail build`` shows: a live display in a real terminal (tmux), plain lines in a
pipe, ``-q``, ``-v`` and ``buildjail --version``."""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildjail.progress import (
    LiveProgress,
    PlainProgress,
    QuietProgress,
    column_widths,
    format_elapsed,
)

PROJECTS = Path(__file__).parent / "projects"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
ELAPSED = re.compile(r"\b\d+:\d\d\b")


def buildjail(*args: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildjail", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_plain_lines_keep_their_format() -> None:
    """Tests and logs parse them: ``buildjail: NAME: STEP``, controls escaped."""
    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.step("/src/victim/", "build_wheel")
    progress.step("/src/ev\x1bil", "a\rb")
    progress.done("/src/victim/")
    progress.close()
    assert stream.getvalue() == ("buildjail: victim: build_wheel\n"
                                 "buildjail: ev\\x1bil: a\\x0db\n")


def test_quiet_shows_nothing() -> None:
    progress = QuietProgress()
    progress.step("/src/victim", "build_wheel")
    progress.done("/src/victim")
    progress.close()


def test_columns_fit_the_width() -> None:
    assert column_widths(80, [15, 10], [8, 11]) == (15, 11)  # nothing cut
    name, step = column_widths(30, [130, 15], [8, 200])
    assert name == 10 and name + step + 7 + 2 == 30
    assert column_widths(3, [5], [5]) == (1, 1)


def test_live_rows_count_done_and_show_a_requirement_on_its_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Done packages leave the table and count; a build requirement's steps show on the row
    of the package waiting for it (one at a time), never as a package of their own."""
    from rich.console import Console

    monkeypatch.setenv("COLUMNS", "100")  # rich sizes by the standard streams' terminal
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as stream:
            progress = LiveProgress(["/src/a", "/src/b"], stream)
            progress.step("/src/a", "build_wheel")
            progress.step("/src/b", "wheel: installing build requirements")
            progress.step("/src/b", "building the build requirement flit-core")
            progress.step("/work/flit_core-3.9.tar.gz", "build_wheel")
            progress.done("/src/a")
            table = progress.render()
            progress.close()
    finally:
        os.close(slave)
        os.close(master)
    out = io.StringIO()
    Console(file=out, width=100).print(table)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert len(lines) == 2 and "1/2 done" in lines[0], lines
    assert re.fullmatch(r"b\s+building the build requirement flit-core: flit_core-3\.9\.tar\.gz:"
                        r" build_wheel\s+0:00", lines[1]), lines


def test_elapsed_time() -> None:
    assert [format_elapsed(s) for s in (0, 3.9, 61, 3600 + 62)] == [
        "0:00", "0:03", "1:01", "1:01:02"]


def test_the_other_commands_do_not_import_rich() -> None:
    """Start-up time: only a live display on a terminal imports it."""
    code = ("import sys, io\n"
            "from buildjail.cli import build_parser\n"
            "from buildjail.progress import open_progress\n"
            "build_parser().parse_args(['run', '--', 'true'])\n"
            "open_progress(['/x'], io.StringIO()).step('/x', 'build_wheel')\n"
            "assert 'rich' not in sys.modules, sorted(m for m in sys.modules if 'rich' in m)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_version() -> None:
    proc = buildjail("--version")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"buildjail {importlib.metadata.version('buildjail')}\n"


def _onecompile(tmp_path: Path, name: str = "onecompile") -> Path:
    project = tmp_path / name
    shutil.copytree(PROJECTS / "onecompile", project)
    return project


@ROOT_ONLY
def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    project = _onecompile(tmp_path)
    proc = buildjail("build", "-q", "--wheel", "--no-index", "-o", str(tmp_path / "dist"),
                     str(project))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "ok     onecompile 1.0: onecompile-1.0-py3-none-any.whl\n"
    loud = buildjail("build", "--wheel", "--no-index", "-o", str(tmp_path / "dist2"),
                     str(project))
    assert "buildjail: onecompile: build_wheel\n" in loud.stderr  # the control


@ROOT_ONLY
def test_verbose_prints_each_hook_and_the_kept_log(tmp_path: Path) -> None:
    project = _onecompile(tmp_path)
    proc = buildjail("build", "-v", "--wheel", "--no-index", "-o", str(tmp_path / "dist"),
                     "--logs", str(tmp_path / "logs"), str(project))
    assert proc.returncode == 0, proc.stderr
    summary, *details = proc.stdout.splitlines()
    assert summary == "ok     onecompile 1.0: onecompile-1.0-py3-none-any.whl"
    assert [re.sub(r"\d+\.\d\d", "T", line) for line in details] == [
        "       get_requires_for_build_wheel: T s, exit 0",
        "       build_wheel: T s, exit 0",
        f"       log: {tmp_path / 'logs' / 'onecompile.log'}"]
    assert (tmp_path / "logs" / "onecompile.log").is_file()


def test_quiet_and_verbose_together_are_bad_input() -> None:
    proc = buildjail("build", "-q", "-v", "/nonexistent")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("buildjail: argument -v/--verbose: not allowed with argument "
                           "-q/--quiet (see buildjail build --help)\n")


class Terminal:
    """A detached tmux session of a given size on a tmux server of its own."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.socket = f"buildjail-test-{uuid.uuid4().hex[:12]}"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def start(self, command: str) -> None:
        self.tmux("new-session", "-d", "-s", "build", "-x", str(self.width), "-y", "24",
                  f"{command}; echo EXIT=$?; sleep 600")

    def screen(self) -> list[str]:
        """The pane's lines, wrapped ones joined (a line longer than the width shows)."""
        lines = self.tmux("capture-pane", "-p", "-J", "-t", "build").splitlines()
        return [line.rstrip() for line in lines if line.strip()]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False, timeout=30)


@pytest.fixture
def terminal(request: pytest.FixtureRequest) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux; .ci/run installs it)")
    term = Terminal(request.param)
    try:
        yield term
    finally:
        term.close()


def _wait_for(terminal: Terminal, found: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = terminal.screen()
        if any(found in line for line in screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{found!r} never shown; the screen: {terminal.screen()}")


@ROOT_ONLY
@pytest.mark.parametrize("terminal", [80, 200], indirect=True)
def test_live_display_in_a_real_terminal(tmp_path: Path, terminal: Terminal) -> None:
    """While the wheel compiles: a count line and the package's row, each within the width,
    with its step and elapsed time; afterwards only the summary (no trail of half-lines)."""
    name = "onecompile-" + "x" * 150  # longer than either terminal
    project = _onecompile(tmp_path, name)
    terminal.start(f"cd {tmp_path} && {sys.executable} -m buildjail build --wheel --no-index "
                   f"-C compile-seconds=3 -o dist {name}")
    screen = _wait_for(terminal, "build_wheel", 60)
    assert all(len(line) <= terminal.width for line in screen), screen
    header, row = screen
    assert header.startswith("buildjail build") and "0/1 done" in header, screen
    assert ELAPSED.search(header), screen
    assert row.startswith("onecompile-xxx") and "…" in row, screen
    assert "build_wheel" in row and ELAPSED.search(row), screen
    time.sleep(1.6)  # the step's time goes on
    [later] = [line for line in terminal.screen() if "build_wheel" in line]
    assert ELAPSED.findall(later)[-1] > ELAPSED.findall(row)[-1], (row, later)
    assert _wait_for(terminal, "EXIT=", 120) == [
        "ok     onecompile 1.0: onecompile-1.0-py3-none-any.whl", "EXIT=0"]
    assert (project / "build_wheel_calls").is_file()
