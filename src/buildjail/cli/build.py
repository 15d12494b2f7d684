"""``buildjail build``: sdists and wheels in the sandbox; progress, summary and report."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import BuildjailError
from ..escaping import escape_controls
from ..installers import DEFAULT_INSTALLER, INSTALLERS
from ..progress import open_progress
from ._checks import (
    BadInputError,
    check_directory_option,
    check_existing_paths,
    check_interpreter,
    check_output_file,
    check_source,
)
from ._options import (
    absolute,
    add_backend,
    add_on_attempt,
    add_policy,
    add_readonly,
    load_policy,
    write_report,
)

if TYPE_CHECKING:
    from ..build import BuildOptions, PackageReport


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``build`` to *commands*."""
    build = commands.add_parser("build", help="build sdists and wheels in the sandbox")
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
    settings = build.add_mutually_exclusive_group()
    settings.add_argument("-C", "--config-setting", metavar="KEY[=VALUE]", action="append",
                          default=[], help="pass a setting to the backend (repeatable; a "
                          "repeated KEY gives a list, KEY alone an empty value), as pypa/build")
    settings.add_argument("--config-json", metavar="JSON",
                          help="pass the settings as one JSON object (nested values allowed; "
                               "not with -C), as pypa/build")
    build.add_argument("--python", metavar="PATH",
                       help="make the build environments from this Python 3.8+ interpreter "
                            "(default: buildjail's own); hooks run under it")
    build.add_argument("--keep-build-tree", action="store_true",
                       help="keep each package's work tree (extracted sources, build "
                            "environments) in a new temporary directory, named in the summary "
                            "and the report")
    build.add_argument("--keep-env", metavar="PATTERN", action="append", default=[],
                       help="pass environment variables matching PATTERN into the sandbox "
                            "(repeatable; the delete patterns still win)")
    add_policy(build, "named policy (default: full)", "policy TOML file")
    add_backend(build)
    add_on_attempt(build, "a package's hooks")
    build.add_argument("-j", "--jobs", type=int, default=1, help="build N sources at once")
    build.add_argument("--report", metavar="FILE", help="write a JSON report per package")
    build.add_argument("--find-links", metavar="DIR", action="append", default=[],
                       help="look for build requirements in DIR")
    build.add_argument("--installer", choices=INSTALLERS, default=DEFAULT_INSTALLER,
                       help="what installs the build requirements (uv, found through its "
                            "Python package; pip: this interpreter's); each reads the user's "
                            "own index configuration, never a project's")
    build.add_argument("--index-url", metavar="URL",
                       help="package index for requirements (over the installer's "
                            "configuration)")
    build.add_argument("--extra-index-url", metavar="URL", action="append", default=[],
                       help="another package index for requirements (repeatable; in place of "
                            "the extra indexes of the installer's environment)")
    build.add_argument("--no-index", action="store_true", help="do not use a package index")
    build.add_argument("--build-constraint", metavar="FILE",
                       help="constraints for every build requirement (with --hash lines, "
                            "every one must match a hash)")
    build.add_argument("--only-binary-build-deps", action="store_true",
                       help="refuse build requirements that have no wheel, instead of "
                            "building their wheels in the sandbox")
    build.add_argument("--logs", metavar="DIR", help="keep each package's build log in DIR")
    add_readonly(build, "every hook")
    loudness = build.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="print only failures and the final summary")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="also print, under each package's summary line, every hook "
                               "with its duration and exit code, and the log's path when it "
                               "is kept (--logs, or a failure)")
    build.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build every source of *args*; return 0 when all succeeded, 1 otherwise."""
    from ..build import build_all

    _check_inputs(args)
    options = _options(args)
    sources = [os.path.abspath(src) for src in args.sources]
    progress = open_progress(sources, sys.stderr, quiet=args.quiet)
    try:
        reports = build_all(sources, args.outdir, options, jobs=args.jobs,
                            progress=progress.step,
                            done=lambda report: progress.done(report.source))
    except OSError as error:
        raise BuildjailError(f"cannot use the output directory {args.outdir}: "
                             f"{error.strerror or error}") from None
    finally:
        progress.close()
    _print_summary(reports, verbose=args.verbose)
    if args.report:
        write_report(args.report, [report.to_dict() for report in reports])
    return 0 if all(report.result == "ok" for report in reports) else 1


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before anything is built or created, every source and path that cannot work."""
    check_existing_paths("--readonly", args.readonly)
    check_existing_paths("--policy", [args.policy] if args.policy else [])
    check_existing_paths("--build-constraint",
                         [args.build_constraint] if args.build_constraint else [])
    check_existing_paths("--find-links", [path for path in args.find_links if "://" not in path])
    check_directory_option("-o/--outdir", args.outdir)
    check_directory_option("--logs", args.logs)
    check_output_file("--report", args.report)
    if args.jobs < 1:
        raise BadInputError(f"-j/--jobs {args.jobs}: must be at least 1")
    if args.config_json is not None:
        _config_json(args.config_json)
    if args.python is not None:
        check_interpreter(args.python)
    for source in args.sources:
        check_source(source)
        if args.sdist and os.path.isfile(source):
            raise BadInputError(f"--sdist {source}: an sdist cannot be built from an sdist; "
                                "pass --wheel (or nothing) to build its wheel")


def _options(args: argparse.Namespace) -> BuildOptions:
    from ..build import BuildOptions
    from ..buildenv import IndexOptions

    policy = load_policy(args).with_paths(readonly=absolute(args.readonly)).with_env(
        keep=args.keep_env).with_on_attempt(args.on_attempt)
    explicit = args.sdist or args.wheel
    index = IndexOptions(find_links=tuple(absolute(args.find_links)),
                         index_url=args.index_url, no_index=args.no_index,
                         extra_index_urls=tuple(args.extra_index_url),
                         build_constraint=absolute([args.build_constraint])[0]
                         if args.build_constraint else None)
    return BuildOptions(
        policy=policy,
        backend=args.backend,
        sdist=args.sdist or not explicit,
        wheel=args.wheel or not explicit,
        wheel_from_sdist=not explicit,
        config_settings=_config_json(args.config_json) if args.config_json is not None
        else _config_settings(args.config_setting),
        index=index,
        installer=args.installer,
        keep_logs=os.path.abspath(args.logs) if args.logs else None,
        only_binary_build_deps=args.only_binary_build_deps,
        overwrite=args.overwrite,
        python=os.path.abspath(args.python) if args.python else None,
        keep_build_tree=args.keep_build_tree,
    )


def _config_json(text: str) -> dict[str, Any]:
    """``--config-json``'s object, as pypa/build reads it; BadInputError for anything else."""
    import json

    try:
        settings = json.loads(text)
    except ValueError as failure:
        raise BadInputError(f"--config-json: not valid JSON ({failure})") from None
    if not isinstance(settings, dict):
        raise BadInputError(f"--config-json: must be a JSON object, not "
                            f"{type(settings).__name__}")
    return settings


def _config_settings(items: list[str]) -> dict[str, str | list[str]]:
    """``-C`` items as pypa/build reads them: KEY=VALUE, KEY alone empty, a repeat a list."""
    settings: dict[str, str | list[str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        previous = settings.get(key)
        if previous is None:
            settings[key] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            settings[key] = [previous, value]
    return settings


def _print_summary(reports: list[PackageReport], *, verbose: bool = False) -> None:
    """One line per package; a failure's reason, then the end of its log, escaped.

    Names, versions and log lines come from the build: control characters (a clipboard
    write through OSC 52, a carriage return faking a success line) are shown, not sent.
    With *verbose*, every hook's duration and exit code and the kept log's path follow.
    """
    for report in reports:
        stream = sys.stdout if report.result == "ok" else sys.stderr
        if report.result == "ok":
            outputs = ", ".join(os.path.basename(item["path"]) for item in report.outputs)
            print(escape_controls(f"ok     {report.name or report.source} "
                                  f"{report.version or ''}: {outputs}"))
        else:
            print(f"FAILED {escape_controls(report.error or 'failed')}", file=sys.stderr)
            for cause in report.causes:
                print(f"       likely cause: {escape_controls(cause)}", file=sys.stderr)
        tried = report.attempts_summary()
        if tried:
            print(f"       {escape_controls(tried)}", file=stream)
        if verbose:
            _print_hooks(report, stream)
        if report.log and (verbose or report.result != "ok"):
            print(f"       log: {escape_controls(report.log)}", file=stream)
        if report.build_tree:
            print(f"       build tree: {escape_controls(report.build_tree)}", file=stream)


def _print_hooks(report: PackageReport, stream: TextIO) -> None:
    """A line per hook *report* called: its name, duration, exit code and limit hit."""
    for hook in report.hooks:
        limit = f", {escape_controls(hook.limit_hit)}" if hook.limit_hit else ""
        print(f"       {hook.name}: {hook.duration:.2f} s, exit {hook.exit_code}{limit}",
              file=stream)
