"""The launcher fromager puts in front of each isolated step: run that step in the sandbox.

Run by absolute path as ``python -I _fromager_isolate.py --profile P [--policy F]
--backend B --sys-path DIR -- CMD ARGS...`` (see ``buildjail.fromager``). It decides
what the step may write:

- a PEP 517 hook (``python .../_in_process.py HOOK CONTROL_DIR``): buildjail's hook
  runner — the source tree, the control directory and the output directories;
- ``uv venv ... PATH``: the new environment ``PATH``;
- ``wheel pack DIR --dest-dir D``: the working directory, ``DIR`` (it rewrites
  ``WHEEL``) and ``D``;
- anything else (queries of the build environment): nothing.

The environment follows the policy's allow-list, plus the variables fromager added
itself (per-package settings); the delete patterns (tokens, passwords, ...) apply to all.
Exit code: the step's own, 124 on timeout, 125 when the sandbox could not be set up
(reason on stderr).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

EXIT_SETUP_FAILED = 125


class Options:
    """The launcher's options and the command after ``--``."""

    def __init__(self) -> None:
        self.profile = "full"
        self.policy: str | None = None
        self.backend = "auto"
        self.sys_path = ""
        self.launch_env = ""
        self.cmd: list[str] = []


def parse(argv: Sequence[str]) -> Options:
    """Parse ``--profile P [--policy F] --backend B --sys-path DIR -- CMD...``.

    By hand, not with argparse: this runs once per build step and start-up time counts.
    """
    options = Options()
    names = {"--profile": "profile", "--policy": "policy", "--backend": "backend",
             "--sys-path": "sys_path", "--launch-env": "launch_env"}
    index = 0
    while index < len(argv) and argv[index] != "--":
        name = names.get(argv[index])
        if name is None or index + 1 >= len(argv):
            raise SystemExit(f"buildjail-fromager-isolate: bad option {argv[index]!r}")
        setattr(options, name, argv[index + 1])
        index += 2
    options.cmd = list(argv[index + 1:])
    if not options.cmd or not options.sys_path:
        raise SystemExit("usage: _fromager_isolate.py --profile P [--policy F] --backend B "
                         "--sys-path DIR [--launch-env NAMES] -- CMD ARGS...")
    return options


def is_hook(cmd: Sequence[str]) -> bool:
    """Whether *cmd* is pyproject_hooks' ``python _in_process.py HOOK CONTROL_DIR``."""
    return len(cmd) == 4 and os.path.basename(cmd[1]) == "_in_process.py"


def _option(cmd: Sequence[str], name: str) -> str | None:
    for index, arg in enumerate(cmd[:-1]):
        if arg == name:
            return cmd[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def step_paths(cmd: Sequence[str], cwd: str) -> tuple[list[str], list[str]]:
    """The writable and read-only paths of one non-hook step of fromager."""
    writable: list[str] = []
    readonly: list[str] = [cwd]
    program = os.path.basename(cmd[0])
    if program == "uv" and cmd[1:2] == ["venv"]:
        target = os.path.abspath(os.path.join(cwd, cmd[-1]))
        os.makedirs(target, exist_ok=True)
        writable.append(target)
        uv = cmd[0] if os.path.isabs(cmd[0]) else shutil.which(cmd[0])
        if uv:
            readonly.append(os.path.dirname(os.path.abspath(uv)))
        python = _option(cmd, "--python")
        if python and os.path.isabs(python):
            readonly.append(os.path.dirname(os.path.dirname(python)))
    elif program == "wheel" and cmd[1:2] == ["pack"]:
        writable.append(cwd)
        destination = _option(cmd, "--dest-dir") or _option(cmd, "-d")
        if destination:
            writable.append(os.path.abspath(os.path.join(cwd, destination)))
        if len(cmd) > 2 and not cmd[2].startswith("-"):
            # wheel pack rewrites DIR/*.dist-info/WHEEL (the build number).
            writable.append(os.path.abspath(os.path.join(cwd, cmd[2])))
        executable = shutil.which(cmd[0])
        if executable:
            readonly.append(os.path.dirname(os.path.abspath(executable)))
    elif os.path.isabs(cmd[0]):
        # <build env>/bin/python -c ...: the build environment and its base installation.
        from buildjail.pep517 import interpreter_prefixes

        readonly += interpreter_prefixes(cmd[0])
    return writable, [path for path in dict.fromkeys(readonly) if path != "/"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one isolated step of fromager in the sandbox; return its exit code."""
    args = parse(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, args.sys_path)
    from buildjail.errors import BuildjailError, SandboxSetupError
    from buildjail.policy import Policy

    try:
        policy = Policy.from_toml(args.policy) if args.policy else Policy.profile(args.profile)
        # Keep what fromager added (its per-package variables), besides what the policy
        # allows; the variables buildjail was started with follow the allow-list, and the
        # delete patterns (tokens, passwords) apply to everything.
        launched_with = set(args.launch_env.split(","))
        policy = policy.with_env(keep=[name for name in os.environ if name not in launched_with])
        common = [sys.prefix, sys.base_prefix]
        if os.environ.get("VIRTUAL_ENV", "").startswith("/"):
            common.append(os.environ["VIRTUAL_ENV"])
        cwd = os.getcwd()
        if is_hook(args.cmd):
            from buildjail.pep517 import HookFailed, SandboxedHookRunner

            runner = SandboxedHookRunner(policy, backend=args.backend, readonly=common,
                                         env=os.environ)
            try:
                runner(args.cmd, cwd=cwd)
            except HookFailed as failure:
                if failure.result.limit_hit:  # the hook's own output cannot say why
                    print(f"buildjail: {failure}", file=sys.stderr)
                return failure.returncode
            return 0
        from buildjail.sandbox import Sandbox

        writable, readonly = step_paths(args.cmd, cwd)
        result = Sandbox(policy, backend=args.backend).run(
            args.cmd, cwd=cwd, env=os.environ, writable=writable,
            readonly=[*readonly, *common])
        if result.limit_hit:
            print(f"buildjail: {os.path.basename(args.cmd[0])} was stopped by the "
                  f"{result.limit_hit.replace('_', ' ')} limit in the sandbox", file=sys.stderr)
        return result.exit_code
    except SandboxSetupError as error:
        fix = f"\n  fix: {error.fix}" if error.fix else ""
        print(f"buildjail: sandbox not set up: {error.reason}{fix}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    except BuildjailError as error:
        print(f"buildjail: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
