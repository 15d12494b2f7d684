"""Escaping: text from a build shown with its control characters escaped, never performed."""

from __future__ import annotations

from buildjail.escaping import escape_controls, one_line

HOSTILE = "ok\n\x1b]52;c;ZXZpbA==\x07\rFAKE\ttab\u202e"
"""An OSC 52 clipboard write, a bell, a carriage-return overwrite, a bidi override."""


def test_controls_are_shown_escaped_newlines_and_tabs_kept() -> None:
    assert escape_controls(HOSTILE) == "ok\n\\x1b]52;c;ZXZpbA==\\x07\\x0dFAKE\ttab\\u202e"


def test_one_line_escapes_newlines_and_tabs_too() -> None:
    shown = one_line(HOSTILE)
    assert shown == "ok\\n\\x1b]52;c;ZXZpbA==\\x07\\x0dFAKE\\ttab\\u202e"
    assert shown.isprintable()


def test_escaping_is_idempotent() -> None:
    """What the CLI escapes again (an already escaped summary) comes out the same."""
    assert escape_controls(one_line(HOSTILE)) == one_line(HOSTILE)
    assert one_line(one_line(HOSTILE)) == one_line(HOSTILE)
