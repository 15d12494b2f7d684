"""Run one of fromager's isolated steps in buildjail's sandbox, from a new process.

fromager puts this launcher in front of each step it isolates (see
:func:`buildjail.fromager.isolation_prefix`); ``buildjail fromager`` runs the steps it
recognises in its own process instead, so this runs only for the callers it does not::

    python -I _launcher.py --policy JSON --backend B --sys-path DIR --launch-env NAMES
        -- CMD ARGS...

Run by path, like pyproject_hooks' ``_in_process``: it imports only the standard library
until ``DIR`` is first on ``sys.path``, then hands the step to
:func:`buildjail.fromager.steps.run_launched`. Its options are parsed by hand, not with
argparse: this runs once per build step and start-up time counts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

OPTIONS = ("--policy", "--backend", "--sys-path", "--launch-env")
USAGE = ("usage: _launcher.py --policy JSON --backend B --sys-path DIR [--launch-env NAMES] "
         "-- CMD ARGS...")


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The options (by name, without ``--``) and the command after ``--``."""
    options = {"backend": "auto", "launch-env": ""}
    index = 0
    while index < len(argv) and argv[index] != "--":
        if argv[index] not in OPTIONS or index + 1 >= len(argv):
            raise SystemExit(f"buildjail-fromager-isolate: bad option {argv[index]!r}")
        options[argv[index].removeprefix("--")] = argv[index + 1]
        index += 2
    cmd = list(argv[index + 1:])
    if not cmd or not options.get("sys-path") or "policy" not in options:
        raise SystemExit(USAGE)
    return options, cmd


def main(argv: Sequence[str] | None = None) -> int:
    """Run the step the arguments name in the sandbox; return its exit code."""
    options, cmd = parse(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, options["sys-path"])
    from buildjail.fromager.steps import run_launched

    return run_launched(options["policy"], options["backend"],
                        options["launch-env"].split(","), cmd)


if __name__ == "__main__":
    sys.exit(main())
