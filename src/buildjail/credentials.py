"""Credentials in URLs (``https://user:TOKEN@host``), redacted wherever buildjail passes or
writes text it did not make: build logs, error messages, kept environment values."""

from __future__ import annotations

import functools
import re


@functools.cache
def _url_userinfo() -> re.Pattern[str]:
    """A URL's scheme and user information, compiled on first use, not at import (a run
    redacts only when its policy asks)."""
    return re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/@]+)@")


def redact(text: str) -> str:
    """*text* with the secret part of every URL's user information replaced by ``***``.

    ``https://user:TOKEN@host`` becomes ``https://user:***@host``; a lone token
    (``https://TOKEN@host``) becomes ``https://***@host``.
    """

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"

    return _url_userinfo().sub(hide, text)
