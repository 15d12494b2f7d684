"""Text that came from a build, made safe to show: control characters escaped."""

from __future__ import annotations

import functools
import re

_LINE_BREAKS = str.maketrans({"\n": "\\n", "\t": "\\t"})


@functools.cache
def _controls() -> re.Pattern[str]:
    """The control and bidirectional characters, compiled on first use, not at import (most
    runs show no build's text)."""
    return re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                      "\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """*text* safe for a terminal: control and bidirectional characters shown escaped.

    Newlines and tabs stay; ESC, CR, BEL, C1 controls and the like become ``\\x1b``-style
    escapes, so an OSC 52 clipboard write or a carriage-return overwrite is printed, not
    performed.
    """
    return _controls().sub(lambda match: f"\\x{ord(match[0]):02x}" if ord(match[0]) < 0x100
                           else f"\\u{ord(match[0]):04x}", text)


def one_line(text: str) -> str:
    """*text* escaped (:func:`escape_controls`), its newlines and tabs too: one line that
    no value can break into two, or end early in a log."""
    return escape_controls(text).translate(_LINE_BREAKS)
