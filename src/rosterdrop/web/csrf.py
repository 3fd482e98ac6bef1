"""CSRF tokens (pure): one random token per session (or per sign-in form), sent back
in every state-changing form; compared in constant time."""

from __future__ import annotations

import hmac


def tokens_match(expected: str | None, given: str | None) -> bool:
    """``given`` is the token the server handed out; empty or missing never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "replace"),
                               given.encode("utf-8", "replace"))
