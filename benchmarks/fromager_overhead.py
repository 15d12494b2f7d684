#!/usr/bin/env python3
"""Measure what ``buildjail fromager --profile full`` costs over fromager's own isolation.

Each round runs ``fromager bootstrap PACKAGES`` (default: ``six``, which also builds
setuptools from source) twice, in a fresh work directory each time:

- ``native``  ``fromager --network-isolation bootstrap ...`` (fromager's ``unshare`` script);
- ``full``    ``buildjail fromager --profile full -- bootstrap ...`` (every isolated step
              in buildjail's ``full`` sandbox, started from fromager's own process).

The two alternate, and their order flips from round to round, so drift (network, page
cache) affects both alike. Both download the same sdists from the index (no cache is
shared between runs). It prints each run's wall time, the medians and the ratio
``full / native``; the target is at most 1.05 (PASS or MISS, as measured). It also prints
the median of each round's own ``full / native``, which drift between rounds affects less.

PyPI's latency varies by a second or more from run to run on a run of a few seconds. With
``--local-index`` an untimed warm-up bootstrap (fromager's own isolation) fetches the
sdists first, and every timed run resolves and downloads them from a local index serving
those files (fromager's per-package ``resolver_dist.sdist_server_url``): what remains is
the build, which is what the isolation costs on.

Run as root with a venv that has fromager and buildjail (``pip install -e '.[fromager]'``
under Python 3.12+)::

    python3 benchmarks/fromager_overhead.py --venv ~/.cache/buildjail-tests/fromager-venv \\
        [--rounds 3] [--local-index] [--json] [PACKAGE...]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.05
DEFAULT_VENV = Path.home() / ".cache" / "buildjail-tests" / "fromager-venv"


def command(venv: Path, variant: str, packages: list[str],
            options: Sequence[str] = ()) -> list[str]:
    """The command line of one variant (*options*: fromager's own, before ``bootstrap``)."""
    if variant == "native":
        return [str(venv / "bin" / "fromager"), "--network-isolation", *options, "bootstrap",
                *packages]
    return [str(venv / "bin" / "buildjail"), "fromager", "--profile", "full", "--", *options,
            "bootstrap", *packages]


def run_once(venv: Path, variant: str, packages: list[str],
             index: LocalIndex | None = None, keep: Path | None = None) -> float:
    """Run one variant in a fresh directory; return its wall time in seconds."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bj-fromager-{variant}-"))
    workdir.chmod(0o755)  # like a normal work directory: the sandbox's identity may enter it
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    wheels = None
    options: list[str] = []
    if index is not None:
        index.configure(workdir)
        # fromager's own wheel server answers its first query only after a retry (a 1-3 s
        # back-off) unless a slow index gives it time to start: serve wheels-repo here.
        wheels = _serve(workdir / "wheels-repo")
        options = ["--build-wheel-server-url", f"{_url(wheels)}/simple/"]
    try:
        start = time.perf_counter()
        done = subprocess.run(command(venv, variant, packages, options), cwd=workdir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            tail = done.stdout.decode(errors="replace")[-3000:]
            raise SystemExit(f"{variant} run failed ({done.returncode}):\n{tail}")
        if keep is not None:
            for sdist in (workdir / "sdists-repo" / "downloads").iterdir():
                shutil.copy(sdist, keep)
        return elapsed
    finally:
        if wheels is not None:
            _stop(wheels)
        shutil.rmtree(workdir, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(directory: Path) -> http.server.ThreadingHTTPServer:
    """Serve *directory* (it may not exist yet) on 127.0.0.1, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


class LocalIndex:
    """A PEP 503 index on 127.0.0.1 serving the sdists of a warm-up run."""

    def __init__(self, venv: Path, packages: list[str]) -> None:
        """Bootstrap *packages* once (untimed, fromager's own isolation); serve its sdists."""
        self.root = Path(tempfile.mkdtemp(prefix="bj-fromager-index-"))
        files = self.root / "files"
        files.mkdir()
        run_once(venv, "native", packages, keep=files)
        self.projects: list[str] = []
        for sdist in sorted(files.iterdir()):
            project = re.sub(r"[-_.]+", "-", sdist.name.rsplit("-", 1)[0]).lower()
            page = self.root / "simple" / project
            page.mkdir(parents=True)
            (page / "index.html").write_text(
                f'<a href="../../files/{sdist.name}">{sdist.name}</a>\n')
            self.projects.append(project)
        self.server = _serve(self.root)
        self.url = f"{_url(self.server)}/simple/"

    def configure(self, workdir: Path) -> None:
        """Point fromager's resolver at this index for every project, in *workdir*."""
        settings = workdir / "overrides" / "settings"
        settings.mkdir(parents=True)
        for project in self.projects:
            (settings / f"{project.replace('-', '_')}.yaml").write_text(
                f"resolver_dist:\n  sdist_server_url: {self.url}\n")

    def close(self) -> None:
        """Stop serving and remove the files."""
        _stop(self.server)
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    """Run the benchmark; print the times and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", default=["six"])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help=f"venv with fromager and buildjail (default: {DEFAULT_VENV})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-index", action="store_true",
                        help="fetch the sdists once, then serve them locally to every run")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    for tool in ("fromager", "buildjail"):
        if not (args.venv / "bin" / tool).exists():
            parser.error(f"{args.venv}/bin/{tool} is missing (see the module docstring)")
    times: dict[str, list[float]] = {"native": [], "full": []}
    local = LocalIndex(args.venv, args.packages) if args.local_index else None
    try:
        for index in range(args.rounds):
            order = ["native", "full"] if index % 2 == 0 else ["full", "native"]
            for variant in order:
                elapsed = run_once(args.venv, variant, args.packages, local)
                times[variant].append(elapsed)
                if not args.json:
                    print(f"round {index + 1}: {variant:6} {elapsed:7.2f} s", file=sys.stderr)
    finally:
        if local is not None:
            local.close()
    native, full = statistics.median(times["native"]), statistics.median(times["full"])
    ratio = full / native
    # Each round runs both back to back: the ratio within a round cancels slow drift.
    paired = statistics.median(f / n for f, n in zip(times["full"], times["native"], strict=True))
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    if args.json:
        print(json.dumps({"packages": args.packages, "rounds": args.rounds,
                          "local_index": args.local_index, "times": times,
                          "median_native": native, "median_full": full, "ratio": ratio,
                          "median_round_ratio": paired,
                          "target": TARGET_RATIO, "verdict": verdict}, indent=2))
    else:
        source = "a local index" if args.local_index else "PyPI"
        print(f"fromager bootstrap {' '.join(args.packages)} from {source}, "
              f"{args.rounds} rounds (medians)")
        print(f"  fromager --network-isolation       {native:7.2f} s")
        print(f"  buildjail fromager --profile full  {full:7.2f} s")
        print(f"  ratio {ratio:.3f} (target <= {TARGET_RATIO}): {verdict}")
        print(f"  median of the rounds' own ratios {paired:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
