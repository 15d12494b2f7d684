"""What ``buildjail build`` shows while it builds: a live table on a terminal, plain lines
otherwise, nothing when asked to be quiet.

On a terminal the display is drawn by ``rich`` (imported only then, so that the other
commands do not pay for it): one row per package being built with its step and how long
that step has run, under a line with how many packages are done out of how many, all cut
to the terminal's width. Elsewhere every step is one line, ``buildjail: NAME: STEP``.
Names and steps come from the build: control characters are shown escaped, never sent.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TextIO

from .escaping import escape_controls

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

REQUIREMENT_STEP = "building the build requirement "
"""The step of a package while a build requirement's wheel is built for it (one at a time)."""
REFRESH_PER_SECOND = 4
TIME_WIDTH = 7
"""The elapsed-time column: ``H:MM:SS``."""


class BuildProgress(Protocol):
    """Receives the build's status events; ``close`` ends the display."""

    def step(self, source: str, step: str) -> None:
        """*source* has started *step*."""

    def done(self, source: str) -> None:
        """*source* is built, or has failed."""

    def close(self) -> None:
        """End the display, leaving the terminal as it was."""


def open_progress(sources: list[str], stream: TextIO, *, quiet: bool = False) -> BuildProgress:
    """The display for a build of *sources* on *stream*: live on a terminal, else plain."""
    if quiet:
        return QuietProgress()
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveProgress(sources, stream)
    return PlainProgress(stream)


def package_name(source: str) -> str:
    """The name shown for *source*: its last path component, escaped."""
    return one_line(os.path.basename(source.rstrip("/")))


def one_line(text: str) -> str:
    """*text* escaped for a terminal, on one line (newlines and tabs become spaces)."""
    return " ".join(escape_controls(text).split())


class QuietProgress:
    """Shows nothing (``-q``)."""

    def step(self, source: str, step: str) -> None:
        """Show nothing."""

    def done(self, source: str) -> None:
        """Show nothing."""

    def close(self) -> None:
        """Nothing to end."""


class PlainProgress:
    """One line per step, ``buildjail: NAME: STEP``: for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def step(self, source: str, step: str) -> None:
        """Print the step's line."""
        name = escape_controls(os.path.basename(source.rstrip("/")))
        with self.lock:
            print(f"buildjail: {name}: {escape_controls(step)}", file=self.stream, flush=True)

    def done(self, source: str) -> None:
        """The summary says it: nothing to print."""

    def close(self) -> None:
        """Nothing to end."""


class _Row:
    """One package on the live display: its step and when the step began."""

    def __init__(self, name: str, step: str, now: float) -> None:
        self.name, self.step, self.since = name, step, now


class LiveProgress:
    """A table redrawn in place on a terminal, by ``rich``, as wide as the terminal."""

    def __init__(self, sources: list[str], stream: TextIO) -> None:
        self.total = len(sources)
        self.top_level = set(sources)
        self.finished = 0
        self.started = time.monotonic()
        self.rows: dict[str, _Row] = {}
        self.lock = threading.Lock()
        self.console = _console(stream)
        self.live = _start_live(self.console, self.render)

    def step(self, source: str, step: str) -> None:
        """Show *step* on *source*'s row; a build requirement's step on its package's row."""
        now = time.monotonic()
        with self.lock:
            if source in self.top_level:
                self.rows[source] = _Row(package_name(source), one_line(step), now)
                return
            parent = self._waiting_for_a_requirement()
            if parent is not None:
                base = parent.step.split(": ", 1)[0]
                parent.step = f"{base}: {package_name(source)}: {one_line(step)}"

    def done(self, source: str) -> None:
        """Count *source* as done and take its row away."""
        with self.lock:
            self.rows.pop(source, None)
            if source in self.top_level:
                self.finished += 1

    def close(self) -> None:
        """Stop redrawing and clear the display; the summary is printed after it."""
        self.live.stop()

    def render(self) -> RenderableType:
        """The display as it is now: the count line, then a row per package being built."""
        from rich.cells import cell_len
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        with self.lock:
            header = ("buildjail build", f"{self.finished}/{self.total} done",
                      format_elapsed(now - self.started))
            rows = [(row.name, row.step, format_elapsed(now - row.since))
                    for row in self.rows.values()]
        lines = [header, *rows]
        name_width, step_width = column_widths(
            self.console.width, [cell_len(name) for name, _, _ in lines],
            [cell_len(step) for _, step, _ in lines])
        table = Table.grid(padding=(0, 1))
        table.add_column(width=name_width, no_wrap=True, overflow="ellipsis")
        table.add_column(width=step_width, no_wrap=True, overflow="ellipsis")
        table.add_column(width=TIME_WIDTH, no_wrap=True, justify="right")
        table.add_row(Text(header[0], style="bold"), Text(header[1]),
                      Text(header[2], style="dim"))
        for name, step, elapsed in rows:
            table.add_row(Text(name, style="cyan"), Text(step),
                          Text(elapsed, style="yellow"))
        return table

    def _waiting_for_a_requirement(self) -> _Row | None:
        """The row of the package whose build requirement is being built, if any."""
        for row in self.rows.values():
            if row.step.startswith(REQUIREMENT_STEP):
                return row
        return None


def _console(stream: TextIO) -> Console:
    """A ``rich`` console on *stream* that takes nothing it prints for markup or emoji."""
    from rich.console import Console

    return Console(file=stream, highlight=False, emoji=False, markup=False)


def _start_live(console: Console, render: Callable[[], RenderableType]) -> Live:
    """Start ``rich``'s live display, redrawn from *render* a few times a second."""
    from rich.live import Live

    live = Live(console=console, get_renderable=render,
                refresh_per_second=REFRESH_PER_SECOND, transient=True,
                vertical_overflow="ellipsis")
    live.start()
    return live


def column_widths(width: int, name_cells: list[int], step_cells: list[int]) -> tuple[int, int]:
    """The name and step columns' widths on a *width*-column terminal (the time's is fixed).

    Each gets what its longest entry needs (in cells), the names up to a third of the line
    and the steps up to the rest: nothing is cut unless the line would be too long.
    """
    name_width = max(1, min(max(name_cells), width // 3))
    return name_width, max(1, min(max(step_cells), width - name_width - TIME_WIDTH - 2))


def format_elapsed(seconds: float) -> str:
    """*seconds* as ``M:SS`` (``H:MM:SS`` past an hour)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
