"""Logs: hooks cannot read back what buildjail wrote, secrets are redacted, tails are bounded
and escaped, and a log is never written through another user's link.

Through ``buildjail build`` as root and as a non-root user, on both backends. Judged from
outside: the log file and stderr, byte for byte; the caller's peak memory
(``getrusage(RUSAGE_CHILDREN)`` of a wrapper process); a victim file's content.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path

import pytest

from buildjail.credentials import redact
from buildjail.logs import TAIL_BYTES, HookOutput
from conftest import NONROOT_UID, Identity, Server, peak_rss
from wheels import make_project, simple_index, write_wheel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def test_redaction() -> None:
    assert redact("--index-url https://user:TOKEN@host/simple git+https://TOK@h/r "
                  "ssh://git@github.com") == ("--index-url https://user:***@host/simple "
                                              "git+https://***@h/r ssh://***@github.com")


def test_the_tail_of_a_hooks_output_is_kept_within_a_bound(tmp_path: Path) -> None:
    """The failure message's lines come from the end of the output, never a whole read."""
    data = b"x" * (8 << 20) + b"\n" + b"".join(b"line %d\n" % n for n in range(100))
    with open(tmp_path / "log", "wb") as log, HookOutput(log.fileno()) as output:
        view = memoryview(data)
        while view:
            view = view[os.write(output.write_fd, view[:65536]):]
    assert output.tail(3) == "line 97\nline 98\nline 99"
    assert len(output._tail) <= TAIL_BYTES
    assert (tmp_path / "log").read_bytes() == data


def test_the_index_credentials_never_reach_the_hook_or_the_log(
        identity: Identity, sandbox_backend: str, shared_dir: Path,
        http_server: Server) -> None:
    token = f"TOKEN{secrets.token_hex(8)}"
    simple_index(http_server.root, [write_wheel(shared_dir, "helper")])
    index = http_server.url.replace("http://", f"http://user:{token}@") + "/simple/"
    project = make_project(shared_dir / "perimeter", requires=["helper"], attack={"hooks": {
        "get_requires_for_build_wheel": {"read_own_output": True,
                                         "env": ["PIP_INDEX_URL", "UV_INDEX_URL"]}}})
    logs, report = shared_dir / "logs", shared_dir / "report.json"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--index-url", index, "--logs", str(logs), "--report",
                              str(report), backend=sandbox_backend)
    assert proc.returncode == 0, proc.stderr
    assert any(path.startswith("/simple/helper") for path in http_server.requests)
    log = (logs / "perimeter.log").read_text()
    redacted = http_server.url.replace("http://", "http://user:***@")
    assert "(build requirements from " in log
    assert f"index {redacted}/simple/ (from --index-url)" in log
    read_back = next(line.split(": ", 1)[1] for line in log.splitlines()
                     if line.startswith("PERIMETER read back"))
    data = b"" if read_back.startswith("failed: ") else base64.b64decode(read_back)
    assert token.encode() not in data
    # The hook's output is a pipe, not the log (it may have read its own line back from it).
    assert "PERIMETER stdout is: pipe:[" in log + data.decode(errors="replace")
    assert "PERIMETER env PIP_INDEX_URL: <unset>" in log
    for text in (log, proc.stderr, report.read_text()):
        assert token not in text
    assert "user:***@127.0.0.1" in log


def test_control_a_hook_given_the_log_as_its_output_reads_the_credentials_back(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    """What buildjail did before: the log (with the index URL in it) was the hook's stdout.

    ``--logs DIR`` created it 0644; the hook reopens it through ``/proc/self/fd/1``.
    """
    token = f"TOKEN{secrets.token_hex(8)}"
    seen = shared_dir / "seen"
    seen.mkdir()
    identity.own(seen)
    script = (
        "import os, sys\n"
        "from buildjail import Sandbox\n"
        "log = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)\n"
        f"os.write(log, b'$ uv pip install --index-url https://user:{token}@host/simple\\n')\n"
        "reader = ('import os; data = open(\"/proc/self/fd/1\", \"rb\").read(); '\n"
        "          f'open(\"{sys.argv[2]}/seen\", \"wb\").write(data)')\n"
        f"Sandbox('full', backend={sandbox_backend!r}).run(['/usr/bin/python3.11', '-c', reader], "
        "cwd='/', writable=[sys.argv[2]], stdout=log, stderr=log)\n")
    done = identity.run([identity.python, "-c", script, str(shared_dir / "old.log"), str(seen)])
    assert done.returncode == 0, done.stderr
    assert token.encode() in (seen / "seen").read_bytes()


def test_terminal_escapes_in_a_failing_hook_are_printed_escaped(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    payload = ("\x1b]52;c;ZXZpbA==\x07\x1b[2K\rok     fake 9.9: fake-9.9-py3-none-any.whl\n")
    project = make_project(shared_dir / "perimeter", attack={"hooks": {
        "get_requires_for_build_wheel": {"print": payload, "fail": "failing on purpose"}}})
    logs = shared_dir / "logs"
    identity.own(shared_dir)
    proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                              "--logs", str(logs), backend=sandbox_backend)
    assert proc.returncode == 1
    assert "\\x1b]52;c;ZXZpbA==\\x07\\x1b[2K\\x0dok     fake 9.9" in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr and "\x07" not in proc.stderr
    assert payload.encode() in (logs / "perimeter.log").read_bytes()  # it reached buildjail


def _victim(shared_dir: Path) -> Path:
    victim = Path("/etc") / f"buildjail-victim-{secrets.token_hex(6)}"
    victim.write_text("original\n")
    return victim


@pytest.mark.parametrize("plant", ["foreign-directory", "others-writable", "symlink"])
def test_logs_are_never_written_through_another_users_plant(
        plant: str, identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    victim = _victim(shared_dir)
    logs = shared_dir / "logs"
    attacker = 0 if identity.uid else NONROOT_UID
    try:
        if plant == "symlink":
            target = shared_dir / "elsewhere"
            target.mkdir()
            identity.own(target)
            logs.symlink_to(target)
        else:
            logs.mkdir(mode=0o777)
            logs.chmod(0o777)
            (logs / "perimeter.log").symlink_to(victim)
            os.chown(logs, attacker if plant == "foreign-directory" else identity.uid,
                     attacker if plant == "foreign-directory" else identity.uid)
            os.chown(logs / "perimeter.log", attacker, attacker, follow_symlinks=False)
        project = make_project(shared_dir / "perimeter")
        identity.own(project)
        proc = identity.buildjail(str(project), "--wheel", "-o", str(shared_dir / "out"),
                                  "--logs", str(logs), backend=sandbox_backend)
        assert proc.returncode == 2, proc.stderr
        assert f"buildjail: --logs {logs}: " in proc.stderr
        assert victim.read_text() == "original\n"
    finally:
        victim.unlink()


def test_control_the_old_log_opening_appends_through_a_planted_link(shared_dir: Path) -> None:
    victim = _victim(shared_dir)
    try:
        logs = shared_dir / "logs"
        logs.mkdir()
        (logs / "perimeter.log").symlink_to(victim)
        with open(os.path.join(logs, "perimeter.log"), "a") as stream:  # the old _log_path
            stream.write("appended by root\n")
        assert victim.read_text() == "original\nappended by root\n"
    finally:
        victim.unlink()


FLOOD_MB = 200
MAX_CALLER_RSS_KB = 160 << 10
"""The caller's peak memory allowed while handling a 200 MiB log (it idles at about 60)."""


def test_a_200_mib_failure_log_does_not_take_the_callers_memory(
        identity: Identity, sandbox_backend: str, shared_dir: Path) -> None:
    project = make_project(shared_dir / "perimeter", attack={"hooks": {
        "get_requires_for_build_wheel": {"flood": FLOOD_MB, "print": "the last line\n",
                                         "fail": "after the flood"}}})
    logs = shared_dir / "logs"
    identity.own(shared_dir)
    code, peak, stderr = peak_rss(identity, [
        identity.python, "-m", "buildjail", "build", "--backend", sandbox_backend,
        str(project), "--wheel", "-o", str(shared_dir / "out"), "--logs", str(logs)])
    assert code == 1, stderr
    assert "the last line" in stderr and "RuntimeError: after the flood" in stderr
    assert (logs / "perimeter.log").stat().st_size > FLOOD_MB << 20  # all of it was written
    print(f"peak RSS of buildjail build with a {FLOOD_MB} MiB log: {peak // 1024} MiB",
          file=sys.stderr)
    assert peak < MAX_CALLER_RSS_KB, f"{peak // 1024} MiB"


def test_control_the_old_tail_reading_takes_hundreds_of_megabytes(
        identity: Identity, shared_dir: Path) -> None:
    log = shared_dir / "big.log"
    with open(log, "wb") as stream:
        line = b"x" * 1023 + b"\n"
        for _ in range(FLOOD_MB):
            stream.write(line * 1024)
    identity.own(log)
    old = ("import sys\nlines = open(sys.argv[1], 'rb').read().decode(errors='replace')"
           ".splitlines()\nprint(len(lines[-40:]))\n")  # pep517._log_tail before
    code, peak, stderr = peak_rss(identity, [identity.python, "-c", old, str(log)])
    assert code == 0, stderr
    print(f"peak RSS of the old tail reading of a {FLOOD_MB} MiB log: {peak // 1024} MiB",
          file=sys.stderr)
    assert peak > 2 * MAX_CALLER_RSS_KB, f"{peak // 1024} MiB"
