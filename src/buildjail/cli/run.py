"""``buildjail run``: one command in the sandbox."""

from __future__ import annotations

import argparse
import os

from ..limits import describe_limit
from ._checks import check_existing_paths, check_output_file, duration_value, size_value
from ._options import (
    absolute,
    add_backend,
    add_policy,
    after_dashes,
    error,
    hidden_tools_hint,
    load_policy,
    write_report,
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` to *commands*."""
    run = commands.add_parser("run", help="run one command in the sandbox")
    add_policy(run, "named policy (default: full)", "policy TOML file (overrides --profile)")
    add_backend(run)
    run.add_argument("--writable", metavar="PATH", action="append", default=[],
                     help="make PATH writable in the sandbox (repeatable)")
    run.add_argument("--readonly", metavar="PATH", action="append", default=[],
                     help="make PATH visible read-only, even under a masked path (repeatable)")
    run.add_argument("--mask", metavar="PATH", action="append", default=[],
                     help="hide PATH in the sandbox (repeatable)")
    run.add_argument("--keep-env", metavar="PATTERN", action="append", default=[],
                     help="pass environment variables matching PATTERN (repeatable)")
    run.add_argument("--timeout", metavar="SECONDS", type=duration_value,
                     help="wall-time limit (exit code 124 when hit)")
    run.add_argument("--memory", metavar="SIZE", type=size_value, help="memory limit, e.g. 2G")
    run.add_argument("--json-report", metavar="FILE", help="write the run's result as JSON")
    run.add_argument("--explain", action="store_true",
                     help="print what the sandbox would show and give the command; run nothing")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    run.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``buildjail run``; return the command's exit code."""
    from ..backends import resolved
    from ..sandbox import Sandbox

    cmd = after_dashes(args.cmd)
    if not cmd:
        parser.error("run: no command given (buildjail run [OPTIONS] -- CMD ARGS...)")
    _check_inputs(args)
    policy = load_policy(args).with_paths(
        readonly=absolute(args.readonly), writable=absolute(args.writable),
        masked=absolute(args.mask),
    ).with_env(keep=args.keep_env)
    if args.timeout is not None:
        policy = policy.with_limits(wall_time=args.timeout)
    if args.memory is not None:
        policy = policy.with_limits(memory=args.memory)
    if args.explain:
        from ..explain import explain

        backend = resolved(args.backend)
        print(explain(policy, cmd, os.getcwd(), os.environ, backend))
        return 0
    result = Sandbox(policy, backend=args.backend).run(cmd)
    if args.json_report:
        write_report(args.json_report, result.to_dict())
    if result.limit_hit:
        error(f"stopped: {describe_limit(result.limit_hit)} was hit")
    elif result.exit_code == 127:  # a shell's "command not found"
        hint = hidden_tools_hint(policy)
        if hint:
            error(hint)
    return result.exit_code


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before the sandbox starts, paths that do not exist and a report path that
    cannot be written."""
    check_existing_paths("--writable", args.writable)
    check_existing_paths("--readonly", args.readonly)
    check_existing_paths("--policy", [args.policy] if args.policy else [])
    check_output_file("--json-report", args.json_report)
