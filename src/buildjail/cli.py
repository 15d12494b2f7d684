"""The ``buildjail`` command: a thin shell over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .backends import BACKENDS, choose_backend
from .errors import EXIT_SETUP_FAILED, BuildjailError, SandboxSetupError, render_setup_failure
from .limits import describe_limit, parse_duration, parse_size
from .policy import PROFILES, Policy
from .sandbox import Sandbox

BACKEND_CHOICES = ("auto", *BACKENDS)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``buildjail`` command."""
    parser = argparse.ArgumentParser(
        prog="buildjail", description="Run Python build backends inside a Linux sandbox."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands.add_parser("run", help="run one command in the sandbox"))
    _add_build(commands.add_parser("build", help="build sdists and wheels in the sandbox"))
    audit = commands.add_parser("audit", help="attack this host's sandbox with real probes")
    audit.add_argument("--profile", action="append", choices=PROFILES, dest="profiles",
                       help="profile to audit (repeatable; default: none, network, full)")
    audit.add_argument("--backend", action="append", choices=BACKEND_CHOICES,
                       dest="backends", help="backend to audit (repeatable; default: auto)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.add_argument("--keep-workdir", action="store_true",
                       help="keep the audit's work directory (logs, the probe project)")
    _add_fromager(commands.add_parser(
        "fromager", help="run fromager with every build hook in the sandbox"))
    doctor = commands.add_parser("doctor", help="show what this host can enforce")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _add_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("--profile", choices=PROFILES, default="full",
                     help="named policy (default: full)")
    run.add_argument("--policy", metavar="FILE", help="policy TOML file (overrides --profile)")
    _add_backend(run)
    run.add_argument("--writable", metavar="PATH", action="append", default=[],
                     help="make PATH writable in the sandbox (repeatable)")
    run.add_argument("--readonly", metavar="PATH", action="append", default=[],
                     help="make PATH visible read-only, even under a masked path (repeatable)")
    run.add_argument("--mask", metavar="PATH", action="append", default=[],
                     help="hide PATH in the sandbox (repeatable)")
    run.add_argument("--keep-env", metavar="PATTERN", action="append", default=[],
                     help="pass environment variables matching PATTERN (repeatable)")
    run.add_argument("--timeout", metavar="SECONDS", type=parse_duration,
                     help="wall-time limit (exit code 124 when hit)")
    run.add_argument("--memory", metavar="SIZE", type=parse_size, help="memory limit, e.g. 2G")
    run.add_argument("--json-report", metavar="FILE", help="write the run's result as JSON")
    run.add_argument("--explain", action="store_true",
                     help="print what the sandbox would show and give the command; run nothing")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")


def _add_build(build: argparse.ArgumentParser) -> None:
    build.add_argument("sources", nargs="+", metavar="SRC",
                       help="a source directory or an sdist (.tar.gz)")
    build.add_argument("-o", "--outdir", default="dist",
                       help="output directory (dist); read-only to the hooks when it lies in "
                            "the source tree")
    build.add_argument("--overwrite", action="store_true",
                       help="replace files already in the output directory (never one this "
                            "run made)")
    build.add_argument("-s", "--sdist", action="store_true", help="build an sdist")
    build.add_argument("-w", "--wheel", action="store_true", help="build a wheel")
    build.add_argument("-C", "--config-setting", metavar="KEY[=VALUE]", action="append",
                       default=[], help="pass a setting to the backend (repeatable)")
    build.add_argument("--profile", choices=PROFILES, default="full",
                       help="named policy (default: full)")
    build.add_argument("--policy", metavar="FILE", help="policy TOML file")
    _add_backend(build)
    build.add_argument("-j", "--jobs", type=int, default=1, help="build N sources at once")
    build.add_argument("--report", metavar="FILE", help="write a JSON report per package")
    build.add_argument("--find-links", metavar="DIR", action="append", default=[],
                       help="look for build requirements in DIR")
    build.add_argument("--index-url", metavar="URL", help="package index for requirements")
    build.add_argument("--no-index", action="store_true", help="do not use a package index")
    build.add_argument("--only-binary-build-deps", action="store_true",
                       help="refuse build requirements that have no wheel, instead of "
                            "building their wheels in the sandbox")
    build.add_argument("--logs", metavar="DIR", help="keep each package's build log in DIR")
    _add_readonly(build, "every hook")


def _add_readonly(parser: argparse.ArgumentParser, to: str) -> None:
    parser.add_argument("--readonly", metavar="PATH", action="append", default=[],
                        help=f"show PATH read-only to {to}, e.g. a toolchain outside /usr "
                             "(repeatable)")


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="what enforces the policy (default: auto; see `buildjail doctor`)")


def _add_fromager(fromager: argparse.ArgumentParser) -> None:
    fromager.add_argument("--profile", choices=PROFILES, default="full",
                          help="named policy for fromager's isolated steps (default: full)")
    fromager.add_argument("--policy", metavar="FILE", help="policy TOML file")
    _add_backend(fromager)
    _add_readonly(fromager, "every isolated step")
    fromager.add_argument("args", nargs=argparse.REMAINDER, metavar="-- FROMAGER_ARGS...")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_paths(args)
        if args.command == "run":
            return _run(args, parser)
        if args.command == "audit":
            return _audit(args)
        if args.command == "build":
            from .buildcli import run_build

            return run_build(args)
        if args.command == "fromager":
            from .fromager import run_fromager

            return run_fromager(args.args[1:] if args.args[:1] == ["--"] else args.args,
                                profile=args.profile, policy_file=args.policy,
                                backend=args.backend,
                                readonly=[os.path.abspath(path) for path in args.readonly])
        from .doctor import main as doctor_main

        return doctor_main(json_output=args.json)
    except SandboxSetupError as error:
        print(render_setup_failure(error), file=sys.stderr)
        return EXIT_SETUP_FAILED
    except BuildjailError as error:
        _error(str(error))
        return 2
    except KeyboardInterrupt:
        return 130


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a --readonly or --writable path that does not exist: bad input, exit 2."""
    for option in ("readonly", "writable"):
        for path in getattr(args, option, ()):
            if not os.path.lexists(path):
                raise BuildjailError(f"--{option} {path}: no such file or directory")


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run: no command given (buildjail run [OPTIONS] -- CMD ARGS...)")
    policy = Policy.load(args.profile, args.policy)
    policy = policy.with_paths(
        readonly=[os.path.abspath(path) for path in args.readonly],
        writable=[os.path.abspath(path) for path in args.writable],
        masked=[os.path.abspath(path) for path in args.mask],
    ).with_env(keep=args.keep_env)
    if args.timeout is not None:
        policy = policy.with_limits(wall_time=args.timeout)
    if args.memory is not None:
        policy = policy.with_limits(memory=args.memory)
    if args.explain:
        from .explain import explain

        backend = choose_backend()[0] if args.backend == "auto" else args.backend
        print(explain(policy, cmd, os.getcwd(), os.environ, backend))
        return 0
    result = Sandbox(policy, backend=args.backend).run(cmd)
    if args.json_report:
        with open(args.json_report, "w") as stream:
            json.dump(result.to_dict(), stream, indent=2)
    if result.limit_hit:
        _error(f"stopped: {describe_limit(result.limit_hit)} was hit")
    elif result.exit_code == 127:  # a shell's "command not found"
        _hint_hidden_tools(policy)
    return result.exit_code


def _hint_hidden_tools(policy: Policy) -> None:
    from .explain import failure_hint

    hint = failure_hint(policy, os.environ.get("PATH", ""))
    if hint:
        _error(hint)


def _audit(args: argparse.Namespace) -> int:
    from .audit import run_audit
    from .audit.report import print_json, print_table

    profiles = args.profiles or ["none", "network", "full"]
    backends = [choose_backend()[0] if name == "auto" else name
                for name in (args.backends or ["auto"])]
    quiet = args.json or not sys.stderr.isatty()
    report = run_audit(profiles, list(dict.fromkeys(backends)), keep_workdir=args.keep_workdir,
                       progress=None if quiet else _error)
    if args.json:
        print_json(report, sys.stdout)
    else:
        print_table(report, sys.stdout)
    return 1 if report.failed("full") else 0


def _error(message: str) -> None:
    print(f"buildjail: {message}", file=sys.stderr)
