"""Run inside a test container: every step of the container matrix, reported as one JSON line.

Stdlib only, for the image's own Python (``/usr/bin/python3 -I container_inside.py``), run
as whatever user the container runs as. Each step is a real ``buildjail`` command (the venv
at ``--venv``); its exit code, its bounded stdout and stderr, its parsed JSON where it prints
some and its duration go into the report, which is printed as one line after ``MARKER``.
The build step also builds the same sdist without buildjail, with pip, in the same
container, and reports both wheels (sha256, members, RECORD) so the host can compare them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

MARKER = "BUILDJAIL-CONTAINER-RESULT "
TEXT_LIMIT = 32 << 10
"""The most of a step's stdout or stderr put into the report (its head and its tail)."""
JSON_LIMIT = 8 << 20
"""The most of a step's stdout read to parse it as JSON."""
MEMBER_LIMIT = 10_000
RECORD_LIMIT = 1 << 20
SOURCE_DATE_EPOCH = "1700000000"
"""The same for the sandboxed and the reference build, so a pure-Python wheel is reproducible."""
STATUS_FIELDS = ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                 "Seccomp")
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
TIMEOUTS = {"doctor": 180, "run_full": 60, "run_auto": 60, "run_network": 60, "audit": 360,
            "build": 240, "build_auto": 240, "reference_build": 240}
"""Seconds per step: 1440 in all, below the harness's limit for the whole container."""


def read_bounded(path: Path, limit: int) -> bytes:
    """At most *limit* bytes of *path*."""
    with path.open("rb") as stream:
        return stream.read(limit)


def read_tail(path: Path, limit: int) -> bytes:
    """At most the last *limit* bytes of *path*."""
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - limit))
        return stream.read(limit)


def shorten(data: bytes) -> str:
    """*data* as text, cut to its head and tail when longer than TEXT_LIMIT."""
    if len(data) > TEXT_LIMIT:
        half = TEXT_LIMIT // 2
        data = data[:half] + b"\n[... cut ...]\n" + data[-half:]
    return data.decode(errors="replace")


def run_step(argv: list[str], work: Path, *, timeout: float, parse_json: bool = False,
             env: dict[str, str] | None = None, cwd: str | None = None) -> dict[str, Any]:
    """Run one command (in *cwd*, else *work*) with its output in *work*; report it."""
    out, err = work / "stdout", work / "stderr"
    start = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        try:
            code: int | None = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                                              stderr=stderr, timeout=timeout, check=False,
                                              env=env, cwd=cwd or work).returncode
        except subprocess.TimeoutExpired:
            code = None
    step: dict[str, Any] = {"argv": argv, "exit_code": code,
                            "duration": round(time.monotonic() - start, 3)}
    stdout_bytes = read_bounded(out, JSON_LIMIT)
    step["stdout"] = shorten(stdout_bytes)
    step["stderr"] = shorten(read_bounded(err, JSON_LIMIT))
    if parse_json:
        try:
            step["json"] = json.loads(stdout_bytes)
        except ValueError as error:
            step["json"] = None
            step["json_error"] = str(error)
    return step


def process_facts() -> dict[str, Any]:
    """Who this container's process is: ids, capabilities, maps, seccomp, markers."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            status[name] = value.strip()
    proc_mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                   .splitlines() if line.split()[4].startswith("/proc/")]
    return {
        "euid": os.geteuid(),
        "egid": os.getegid(),
        "status": status,
        "uid_map": Path("/proc/self/uid_map").read_text(),
        "gid_map": Path("/proc/self/gid_map").read_text(),
        "proc_overmounts": proc_mounts,
        "hostname": os.uname().nodename,
        "service_account_token": os.path.exists(TOKEN),
        "containerenv": os.path.exists("/run/.containerenv"),
        "dockerenv": os.path.exists("/.dockerenv"),
        "home": os.environ.get("HOME"),
    }


def wheel_facts(directory: Path) -> dict[str, Any]:
    """The one wheel in *directory*: name, sha256, members and RECORD (bounded)."""
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        return {"error": f"{len(wheels)} wheels in {directory}: {[p.name for p in wheels]}"}
    path = wheels[0]
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        members = [info.filename for info in infos[:MEMBER_LIMIT]]
        records = [info for info in infos if info.filename.endswith(".dist-info/RECORD")]
        record = (archive.open(records[0]).read(RECORD_LIMIT).decode(errors="replace")
                  if len(records) == 1 else None)
    return {"name": path.name, "sha256": digest.hexdigest(), "size": path.stat().st_size,
            "members": members, "record": record}


def build_steps(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """Build the sdist with ``buildjail build`` (native, then auto's choice), and with pip
    alone, offline; report all three."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    index = ["--no-index", "--find-links", args.wheelhouse]
    reference = work / "reference"
    reference.mkdir()
    steps = {}
    for name, backend in (("build", "native"), ("build_auto", "auto")):
        jailed = work / name
        jailed.mkdir()
        step = run_step([f"{args.venv}/bin/buildjail", "build", "--backend", backend,
                         args.sdist, "-o", str(jailed / "out"), *index, "--report",
                         str(jailed / "report.json"), "--logs", str(jailed / "logs")],
                        jailed, timeout=TIMEOUTS[name], env=env)
        step["report"] = _json_file(jailed / "report.json")
        step["wheel"] = wheel_facts(jailed / "out")
        step["logs"] = {path.name: shorten(read_tail(path, TEXT_LIMIT))
                        for path in sorted((jailed / "logs").glob("*.log"))[:4]}
        steps[name] = step
    # PEP 517 with build isolation from the same wheelhouse, as buildjail builds it (without
    # --use-pep517, pip would run the venv's own setuptools' setup.py bdist_wheel).
    step = run_step([f"{args.venv}/bin/python", "-m", "pip", "wheel", "--no-deps",
                     "--use-pep517", "--no-cache-dir", "--disable-pip-version-check", *index,
                     "-w", str(reference / "out"), args.sdist],
                    reference, timeout=TIMEOUTS["reference_build"],
                    env={**env, "PIP_CONFIG_FILE": os.devnull})
    step["wheel"] = wheel_facts(reference / "out")
    steps["reference_build"] = step
    return steps


def _json_file(path: Path) -> Any:
    try:
        return json.loads(read_bounded(path, JSON_LIMIT))
    except (OSError, ValueError) as error:
        return {"error": str(error)}


def buildjail_steps(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """doctor, run under full (native, then auto's choice) and network, the audit of full on
    every installed backend."""
    bj = f"{args.venv}/bin/buildjail"
    backends = ["native", *(["bwrap"] if os.path.exists("/usr/bin/bwrap") else []), "landlock"]
    steps = {}
    for name, argv, parse in (
        ("doctor", [bj, "doctor", "--json"], True),
        ("run_full", [bj, "run", "--profile", "full", "--backend", "native", "--json-report",
                      str(work / "run_full" / "report.json"), "--", "/bin/true"], False),
        ("run_auto", [bj, "run", "--profile", "full", "--json-report",
                      str(work / "run_auto" / "report.json"), "--", "/bin/true"], False),
        ("run_network", [bj, "run", "--profile", "network", "--", "/bin/true"], False),
        ("audit", [bj, "audit", "--profile", "full", "--json",
                   *(arg for backend in backends for arg in ("--backend", backend))], True),
    ):
        directory = work / name
        directory.mkdir()
        # The allow-list view hides the work directory: runs start in /, which it shows.
        steps[name] = run_step(argv, directory, timeout=TIMEOUTS[name], parse_json=parse,
                               cwd="/" if name.startswith("run_") else None)
    for name in ("run_full", "run_auto"):
        report = work / name / "report.json"
        steps[name]["report"] = _json_file(report) if report.exists() else None
    return steps


def main() -> int:
    """Run every step in a fresh work directory; print the report after MARKER."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", required=True, help="the venv buildjail is installed in")
    parser.add_argument("--sdist", required=True, help="the sdist to build")
    parser.add_argument("--wheelhouse", required=True, help="its build requirements")
    parser.add_argument("--workdir", required=True, help="where to make the work directory")
    args = parser.parse_args()
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bj-inside-", dir=args.workdir))
    work.chmod(0o755)
    try:
        report: dict[str, Any] = {"facts": process_facts()}
        report["steps"] = {**buildjail_steps(args, work), **build_steps(args, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["duration"] = round(time.monotonic() - start, 3)
    sys.stdout.write(MARKER + json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
