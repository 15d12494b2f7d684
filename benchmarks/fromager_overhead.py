#!/usr/bin/env python3
"""Measure what ``buildjail fromager --profile full`` costs over fromager's own isolation.

Each round runs ``fromager bootstrap PACKAGES`` (default: ``six``, which also builds
setuptools from source) twice, in a fresh work directory each time:

- ``native``  ``fromager --network-isolation bootstrap ...`` (fromager's ``unshare`` script);
- ``full``    ``buildjail fromager --profile full -- bootstrap ...`` (every isolated step
              in buildjail's ``full`` sandbox).

The two alternate, and their order flips from round to round, so drift (network, page
cache) affects both alike. Both download the same sdists from the index (no cache is
shared between runs). It prints each run's wall time, the medians and the ratio
``full / native``; the target is at most 1.05 (PASS or MISS, as measured).

Run as root with a venv that has fromager and buildjail (``pip install -e '.[fromager]'``
under Python 3.12+)::

    python3 benchmarks/fromager_overhead.py --venv ~/.cache/buildjail-tests/fromager-venv \\
        [--rounds 3] [--json] [PACKAGE...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.05
DEFAULT_VENV = Path.home() / ".cache" / "buildjail-tests" / "fromager-venv"


def command(venv: Path, variant: str, packages: list[str]) -> list[str]:
    """The command line of one variant."""
    if variant == "native":
        return [str(venv / "bin" / "fromager"), "--network-isolation", "bootstrap", *packages]
    return [str(venv / "bin" / "buildjail"), "fromager", "--profile", "full", "--",
            "bootstrap", *packages]


def run_once(venv: Path, variant: str, packages: list[str]) -> float:
    """Run one variant in a fresh directory; return its wall time in seconds."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bj-fromager-{variant}-"))
    workdir.chmod(0o755)  # like a normal work directory: the sandbox's identity may enter it
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    try:
        start = time.perf_counter()
        done = subprocess.run(command(venv, variant, packages), cwd=workdir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            tail = done.stdout.decode(errors="replace")[-3000:]
            raise SystemExit(f"{variant} run failed ({done.returncode}):\n{tail}")
        return elapsed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    """Run the benchmark; print the times and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", default=["six"])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help=f"venv with fromager and buildjail (default: {DEFAULT_VENV})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    for tool in ("fromager", "buildjail"):
        if not (args.venv / "bin" / tool).exists():
            parser.error(f"{args.venv}/bin/{tool} is missing (see the module docstring)")
    times: dict[str, list[float]] = {"native": [], "full": []}
    for index in range(args.rounds):
        order = ["native", "full"] if index % 2 == 0 else ["full", "native"]
        for variant in order:
            elapsed = run_once(args.venv, variant, args.packages)
            times[variant].append(elapsed)
            if not args.json:
                print(f"round {index + 1}: {variant:6} {elapsed:7.2f} s", file=sys.stderr)
    native, full = statistics.median(times["native"]), statistics.median(times["full"])
    ratio = full / native
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    if args.json:
        print(json.dumps({"packages": args.packages, "rounds": args.rounds, "times": times,
                          "median_native": native, "median_full": full, "ratio": ratio,
                          "target": TARGET_RATIO, "verdict": verdict}, indent=2))
    else:
        print(f"fromager bootstrap {' '.join(args.packages)}, {args.rounds} rounds (medians)")
        print(f"  fromager --network-isolation       {native:7.2f} s")
        print(f"  buildjail fromager --profile full  {full:7.2f} s")
        print(f"  ratio {ratio:.3f} (target <= {TARGET_RATIO}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
