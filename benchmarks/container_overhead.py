#!/usr/bin/env python3
"""buildjail's per-call cost in a default rootful Podman container, beside fromager's unshare.

fromager's ``--network-isolation`` runs every step through ``unshare --uts --net
--map-root-user`` and a bash script that brings loopback up and sets the hostname. In one
run, inside one container, this measures side by side (interleaved rounds):

- ``fromager script``: that script's commands as it runs them (``set -e``);
- ``fromager script without hostname``: the same without ``hostname localhost``, which
  Podman's default seccomp profile refuses (so the script as shipped fails there);
- ``library network``: ``Sandbox("network").run(["/bin/true"])``, the same isolation;
- ``command network``: ``buildjail run --profile network -- /bin/true``;

in a container with Podman's defaults, and again with ``--security-opt unmask=/proc/*``
(what ``full`` needs there) adding ``library full``. Prints medians and ratios.

Run as root from the checkout (uses the test suite's image cache; the first run builds the
image with debootstrap)::

    .venv/bin/python benchmarks/container_overhead.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import containers  # noqa: E402 - the test suite's image harness
import corpus  # noqa: E402

INSIDE = "/opt/buildjail-bench/inside.py"
BASELINE = "fromager script without hostname"


def main() -> None:
    """Build the image, run the timing loop in two containers, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    engine = containers.rootful_podman()
    image = containers.unique("bj-bench")
    mount = ["-v", f"{HERE / 'container_overhead_inside.py'}:{INSIDE}:ro"]
    try:
        with containers.image_tree(corpus.cache_dir()) as (root, _payload):
            engine.import_image(root, image)
        for label, options, full in (("Podman defaults", [], False),
                                     ("--security-opt unmask=/proc/*",
                                      ["--security-opt", "unmask=/proc/*"], True)):
            command = [f"{containers.VENV}/bin/python", "-I", INSIDE, str(args.rounds),
                       containers.VENV, "full" if full else "network"]
            output = engine.run(image, [*mount, *options], command)
            if output.exit_code != 0:
                raise SystemExit(f"{label}: the timing loop failed:\n{output.stderr}")
            _print(label, json.loads(output.stdout.strip().splitlines()[-1]))
    finally:
        engine.remove_images()


def _print(label: str, result: dict[str, dict[str, object]]) -> None:
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    failures: dict[str, int] = result["failures"]  # type: ignore[assignment]
    base = statistics.median(times[BASELINE])
    print(f"\nrootful Podman, {label} ({len(times[BASELINE])} rounds, medians):")
    for name, values in times.items():
        median = statistics.median(values)
        failed = f"  FAILED {failures[name]}/{len(values)}" if failures[name] else ""
        print(f"  {name:34} {median:7.2f} ms  {median / base:5.2f} x{failed}")


if __name__ == "__main__":
    main()
