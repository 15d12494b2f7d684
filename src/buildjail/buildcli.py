"""The ``buildjail build`` command: options to a build, progress, summary and report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import TextIO

from .build import BuildOptions, PackageReport, build_all
from .policy import Policy


def run_build(args: argparse.Namespace) -> int:
    """Build every source of *args*; return 0 when all succeeded, 1 otherwise."""
    options = _options(args)
    progress = _Progress(len(args.sources), sys.stderr)
    reports = build_all([os.path.abspath(src) for src in args.sources], args.outdir, options,
                        jobs=max(1, args.jobs), progress=progress.update)
    progress.finish()
    _print_summary(reports)
    if args.report:
        with open(args.report, "w") as stream:
            json.dump([report.to_dict() for report in reports], stream, indent=2)
    return 0 if all(report.result == "ok" for report in reports) else 1


def _options(args: argparse.Namespace) -> BuildOptions:
    policy = Policy.from_toml(args.policy) if args.policy else Policy.profile(args.profile)
    explicit = args.sdist or args.wheel
    index_args: list[str] = []
    for link in args.find_links:
        index_args += ["--find-links", os.path.abspath(link)]
    if args.index_url:
        index_args += ["--index-url", args.index_url]
    if args.no_index:
        index_args.append("--no-index")
    return BuildOptions(
        policy=policy,
        backend=args.backend,
        sdist=args.sdist or not explicit,
        wheel=args.wheel or not explicit,
        wheel_from_sdist=not explicit,
        config_settings=_config_settings(args.config_setting),
        index_args=tuple(index_args),
        keep_logs=os.path.abspath(args.logs) if args.logs else None,
    )


def _config_settings(items: list[str]) -> dict[str, str | list[str]]:
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


class _Progress:
    """One status line rewritten in place on a terminal; plain lines otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.width = 0

    def update(self, source: str, step: str) -> None:
        name = os.path.basename(source.rstrip("/"))
        with self.lock:
            if self.tty:
                line = f"[{self.total} to build] {name}: {step}"[:100]
                print("\r" + line.ljust(self.width), end="", file=self.stream, flush=True)
                self.width = len(line)
            else:
                print(f"buildjail: {name}: {step}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty and self.width:
            print("\r" + " " * self.width + "\r", end="", file=self.stream, flush=True)


def _print_summary(reports: list[PackageReport]) -> None:
    for report in reports:
        if report.result == "ok":
            outputs = ", ".join(os.path.basename(item["path"]) for item in report.outputs)
            print(f"ok     {report.name or report.source} {report.version or ''}: {outputs}")
        else:
            print(f"FAILED {report.error}", file=sys.stderr)
            if report.log:
                print(f"       log: {report.log}", file=sys.stderr)
