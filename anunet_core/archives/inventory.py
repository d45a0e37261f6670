"""Every entry under an archive's root, classified: a scan file, or not a scan and why.

:func:`list_entries` walks the archive once (``os.scandir``: one ``lstat`` per entry, never
``open`` on anything but a regular file) and returns one :class:`Entry` per directory entry
that is not a folder, in path order. Discovery (:mod:`anunet_core.archives.discovery`) then
gives each entry to a case (an image, a slice of a DICOM series, a label) or lists it as
``ignored`` with its reason, so that every file of the archive is accounted for.

Kinds (:data:`ENTRY_KINDS`):

- ``nifti``: a ``.nii``/``.nii.gz`` file (a scan or a label: the layout decides);
- ``dicom``: a DICOM *image* object (``DICM`` after the 128-byte preamble, an image SOP class);
- ``slice?``: a file that may be a broken slice of a DICOM series: zero bytes, or neither DICOM
  nor an obvious other format (no extension such as ``.txt``). In a folder that holds a DICOM
  series it belongs to that series, whose reader then fails it with the reason; elsewhere it is
  ignored;
- ``other``: never a scan; :attr:`Entry.reason` says why (hidden, not a regular file such as
  a FIFO, a symbolic link leaving the archive or broken, unreadable, a non-image DICOM object
  such as a DICOMDIR or a structured report, a zero-byte file, another format).

Symbolic links: a link to a file or folder inside the archive is followed (each real folder
once); a link leading out of the archive is ``other`` ("symbolic link leaving the archive"),
so an archive can never make the job read (or write next to) files elsewhere.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pydicom

from anunet_core.archives.names import SKIP_DIRS, is_nifti_name
from anunet_core.io.dicom import NOT_DICOM_SUFFIXES, might_be_dicom_slice

__all__ = ["ENTRY_KINDS", "Entry", "dicom_sop_class", "list_entries"]

ENTRY_KINDS: tuple[str, ...] = ("nifti", "dicom", "slice?", "other")

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_META_BYTES = 4096  # the DICOM file meta group (0002) fits easily


@dataclass(frozen=True)
class Entry:
    """One directory entry of an archive (never a folder it walks into).

    Attributes:
        path: the entry's path as found under the root (links not resolved).
        kind: one of :data:`ENTRY_KINDS`.
        reason: why it is not a scan (``kind`` ``other`` and ``slice?``), else ``""``.
        files: how many files it stands for: 1, or every file of a hidden folder.
    """

    path: Path
    kind: str
    reason: str = ""
    files: int = 1


def dicom_sop_class(head: bytes) -> str | None:
    """The MediaStorageSOPClassUID of a DICOM file's first bytes (preamble included), or None.

    The file meta group (0002,xxxx) is always explicit VR little endian, right after ``DICM``.
    """
    pos = 132
    while pos + 8 <= len(head):
        group = int.from_bytes(head[pos : pos + 2], "little")
        element = int.from_bytes(head[pos + 2 : pos + 4], "little")
        if group != 0x0002:
            return None
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = int.from_bytes(head[pos + 8 : pos + 12], "little")
            pos += 12
        else:
            length = int.from_bytes(head[pos + 6 : pos + 8], "little")
            pos += 8
        if element == 0x0002:
            value = head[pos : pos + length]
            return value.rstrip(b"\0 ").decode("ascii", "replace") if len(value) == length else None
        pos += length
    return None


def _dicom_kind(head: bytes) -> tuple[str, str]:
    """``(kind, reason)`` of a file that starts with the DICOM preamble."""
    sop = dicom_sop_class(head)
    if sop is None:
        return "dicom", ""  # unknown class: treated as an image, the reader checks it
    if sop == _DICOMDIR_SOP_CLASS:
        return "other", "DICOMDIR (an index of DICOM files, not an image)"
    name = pydicom.uid.UID(sop).name
    if name == sop or "Image Storage" in name:  # private classes are treated as images
        return "dicom", ""
    return "other", f"non-image DICOM object ({name})"


def _file_kind(path: Path, name: str, size: int) -> tuple[str, str]:
    """``(kind, reason)`` of a regular file (reads at most the first 4 KiB of DICOM files)."""
    if is_nifti_name(name):
        return ("other", "zero-byte file") if size == 0 else ("nifti", "")
    if name.lower() == "dicomdir":
        return "other", "DICOMDIR (an index of DICOM files, not an image)"
    if not might_be_dicom_slice(path):  # the series reader's rule: no slice by its name
        ext = next((e for e in NOT_DICOM_SUFFIXES if name.lower().endswith(e)), "")
        return "other", f"not a scan ({ext} file)" if ext else "not a scan"
    if size == 0:
        return "slice?", "zero-byte file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(_META_BYTES)
    except OSError as exc:
        return "other", f"unreadable ({exc.strerror or type(exc).__name__})"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return _dicom_kind(head)
    return "slice?", "not a scan (no DICOM preamble)"


_SPECIAL = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"))


def _special_kind(mode: int) -> str:
    return next((what for test, what in _SPECIAL if test(mode)), "special file")


def _count_files(folder: str) -> int:
    return sum(len(files) + sum(1 for d in dirs if os.path.islink(os.path.join(top, d)))
               for top, dirs, files in os.walk(folder))


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def list_entries(root: str | os.PathLike) -> list[Entry]:
    """Every entry under ``root`` that is not a folder, classified (see the module docstring),
    sorted by path. Folders that cannot be listed are one ``other`` entry each."""
    root = Path(root)
    real_root = os.path.realpath(root)
    seen = {real_root}
    entries: list[Entry] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            entries.append(Entry(folder, "other", f"unreadable folder ({exc.strerror or type(exc).__name__})"))
            continue
        subfolders = []
        for entry in children:
            sub = _classify(entry, real_root, seen)
            if isinstance(sub, Entry):
                entries.append(sub)
            elif sub is not None:
                subfolders.append(sub)
        stack.extend(reversed(subfolders))
    return sorted(entries, key=lambda e: os.fsencode(e.path))


def _classify(entry: os.DirEntry, real_root: str, seen: set[str]) -> Entry | Path | None:
    """An :class:`Entry`, or the path of a folder to walk into (None: a folder seen already)."""
    path = Path(entry.path)
    name = entry.name
    hidden = name.startswith(".") or name.lower() in SKIP_DIRS
    try:
        link = entry.is_symlink()
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError as exc:
        return Entry(path, "other", f"unreadable ({exc.strerror or type(exc).__name__})")
    if hidden:
        if is_dir:
            return Entry(path, "other", "hidden folder", files=_count_files(entry.path))
        return Entry(path, "other", "hidden file")
    if link:
        real = os.path.realpath(entry.path)
        if not os.path.exists(real):
            return Entry(path, "other", "broken symbolic link")
        if not _inside(real, real_root):
            return Entry(path, "other", "symbolic link leaving the archive")
        if os.path.isdir(real):
            if real in seen:
                return Entry(path, "other", "symbolic link to a folder already in the archive")
            seen.add(real)
            return path
    elif is_dir:
        real = os.path.realpath(entry.path)
        if real in seen:
            return None
        seen.add(real)
        return path
    try:
        st = entry.stat()  # follows a link (inside the archive) to its file
    except OSError as exc:
        return Entry(path, "other", f"unreadable ({exc.strerror or type(exc).__name__})")
    if not stat.S_ISREG(st.st_mode):
        return Entry(path, "other", f"not a regular file ({_special_kind(st.st_mode)})")
    kind, reason = _file_kind(path, name, st.st_size)
    return Entry(path, kind, reason)
