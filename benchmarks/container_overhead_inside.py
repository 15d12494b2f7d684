"""The timing loop of benchmarks/container_overhead.py, run inside the container.

Standard library and buildjail only (the image's venv). Prints one JSON object: per
variant, every wall time in milliseconds and how many runs failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from buildjail import Sandbox, SandboxSetupError

UNSHARE = ["/usr/bin/unshare", "--uts", "--net", "--map-root-user", "/bin/bash", "-e", "-c"]
FROMAGER_SCRIPT = 'ip link set lo up; hostname localhost; exec "$@"'
"""What fromager's run_network_isolation.sh does (``set -e``): loopback up, the hostname."""
WITHOUT_HOSTNAME = 'ip link set lo up; exec "$@"'


def _command(argv: list[str]) -> Callable[[], bool]:
    def run() -> bool:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False).returncode == 0
    return run


def _library(profile: str) -> Callable[[], bool]:
    sandbox = Sandbox(profile)

    def run() -> bool:
        try:
            return sandbox.run(["/bin/true"], cwd="/").exit_code == 0
        except SandboxSetupError:
            return False
    return run


def main() -> None:
    """Measure the variants interleaved, *rounds* times each; print the JSON."""
    rounds, venv, with_full = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "full"
    variants = {
        "fromager script": _command([*UNSHARE, FROMAGER_SCRIPT, "bash", "/bin/true"]),
        "fromager script without hostname": _command(
            [*UNSHARE, WITHOUT_HOSTNAME, "bash", "/bin/true"]),
        "library network": _library("network"),
        "command network": _command([f"{venv}/bin/buildjail", "run", "--profile", "network",
                                     "--", "/bin/true"]),
    }
    if with_full:
        variants["library full"] = _library("full")
    times: dict[str, list[float]] = {name: [] for name in variants}
    failures = dict.fromkeys(variants, 0)
    names = list(variants)
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            ok = variants[name]()
            times[name].append((time.perf_counter() - start) * 1000)
            failures[name] += not ok
    print(json.dumps({"times": times, "failures": failures}))


if __name__ == "__main__":
    main()
