"""A printable, lossless spelling of file paths, for manifests, logs, JSON and Arrow tables.

Archives from other systems hold names that are not valid UTF-8 (Latin-1 exports), and names
with newlines or other control characters. Python keeps such bytes as lone surrogates, which
Arrow, JSON and a UTF-8 terminal refuse; :func:`printable_path` writes them as ``\\xNN``
instead, and :func:`path_from_printable` gets the exact path back.
"""

from __future__ import annotations

import os
import re

__all__ = ["path_from_printable", "printable_path"]

_ESCAPE = re.compile(r"\\\\|\\x([0-9a-fA-F]{2})")


def printable_path(path: str | os.PathLike) -> str:
    """A printable, lossless spelling of a path (for manifests, logs and JSON).

    Valid UTF-8 names print as they are (spaces and unicode included); each byte that is not
    valid UTF-8 (a name from another system's encoding) or belongs to a non-printable character
    (a newline in a name) is written ``\\xNN``, and a backslash ``\\\\``.
    :func:`path_from_printable` is its inverse.
    """
    text = os.fsdecode(path)
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif not ch.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def path_from_printable(text: str) -> str:
    """The path (a ``str`` as ``os`` functions take it) that :func:`printable_path` printed."""
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        raw += text[pos : m.start()].encode("utf-8")
        raw += b"\\" if m.group(1) is None else bytes([int(m.group(1), 16)])
        pos = m.end()
    raw += text[pos:].encode("utf-8")
    return os.fsdecode(bytes(raw))
