"""The project's one formatter of error reasons: any exception -> one line a person can read.

Every manifest row, errors.json entry, MLflow tag and job exit message that reports a failure
goes through :func:`one_line`, so reasons look the same everywhere.
"""

from __future__ import annotations

import re

__all__ = ["MAX_REASON_CHARS", "one_line"]

_SURROGATE = re.compile("[\udc80-\udcff]")

MAX_REASON_CHARS = 400
"""Longest reason kept: longer ones are cut and end in ``...``."""


def one_line(error: BaseException | str, limit: int = MAX_REASON_CHARS) -> str:
    """One line for ``error``: its message with whitespace (newlines too) collapsed.

    A ``ValueError`` (bad input: its message is meant for the user) is its message alone; any
    other exception (a bug or a system failure) is prefixed with its type, unless the message
    already names it, so the reason says what kind of failure it was. A message-less exception
    is its type name. Longer than ``limit`` characters: cut to ``limit`` ending in ``...``
    (``limit`` of at least 3; below that the result is just ``...``). A byte of a file name
    that is not UTF-8 (a lone surrogate in Python's spelling) is written ``\\xNN``, so the line
    survives JSON, Arrow and a UTF-8 log.
    """
    text = _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", " ".join(str(error).split()))
    if isinstance(error, BaseException):
        kind = type(error).__name__
        if not text:
            text = kind
        elif not isinstance(error, ValueError) and kind not in text:
            text = f"{kind}: {text}"
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text
