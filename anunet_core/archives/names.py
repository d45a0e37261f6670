"""Names, folders and ids: what every layout's discovery shares.

Hidden entries (names starting with ``.``, e.g. macOS ``._*`` resource forks and
``.DS_Store``, half-written ``.tmp`` files) and ``__MACOSX`` folders are ignored everywhere.
Name matching of fixed file and folder names is case-insensitive.

Case ids: only file and folder names, never DICOM tags (patient name/ID). Filesystem-safe:
characters other than ``A-Z a-z 0-9 . _ -`` become ``_`` and such a name gets ``-<8 hex>`` of
its original spelling appended (:func:`safe_part`); ids that still collide
(case-insensitively, for macOS/Windows output folders) get ``-<8 hex>`` of their image path
(:func:`unique_ids`). Ids depend only on the case's own path, never on other cases, so they are
stable as an archive grows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from anunet_core.archives.case import Case
from anunet_core.errors import one_line
from anunet_core.io.dicom import has_dicom_preamble, might_be_dicom_slice
from anunet_core.io.nifti import NIFTI_SUFFIXES

__all__ = [
    "IMAGE_NAMES",
    "LABEL_NAMES",
    "LABEL_SUFFIXES",
    "SKIP_DIRS",
    "child",
    "dicom_files",
    "first_existing",
    "folder_id",
    "hidden",
    "is_dicom_file",
    "is_nifti_name",
    "nifti_files",
    "nifti_stem",
    "png_files",
    "safe_part",
    "short_hash",
    "subdirs",
    "unique_ids",
    "walk",
]

log = logging.getLogger(__name__)

#: pairs: base names (without .nii/.nii.gz) of the image in a folder-per-case archive.
IMAGE_NAMES: tuple[str, ...] = ("image", "img", "ct", "mr")
#: pairs and dicom: base names of the label file in a case folder, in order of preference.
LABEL_NAMES: tuple[str, ...] = ("labels", "label", "segmentation", "seg", "mask")
#: pairs (``<case><suffix>.nii.gz``) and dicom (``<case><suffix>.nii.gz`` beside the series).
LABEL_SUFFIXES: tuple[str, ...] = ("_labels", "_label", "_segmentation", "_seg", "_mask")

SKIP_DIRS = frozenset({"__macosx"})
"""Folder names (lower case) ignored everywhere, like hidden entries."""
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID_CHARS = 120


def hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SKIP_DIRS


def is_nifti_name(name: str) -> bool:
    return nifti_stem(name) is not None


def nifti_stem(name: str) -> str | None:
    low = name.lower()
    for ext in NIFTI_SUFFIXES:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def walk(root: Path, max_depth: int | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``(folder, subfolder names, file names)`` top-down, sorted, hidden entries left out.

    Follows symbolic links to folders inside the root, each real folder once (no loops); a
    link leading out of the root is never followed (discovery lists it as ignored).
    """
    seen: set[str] = set()
    real_root = os.path.realpath(root).rstrip(os.sep) + os.sep

    def onerror(exc: OSError) -> None:
        log.warning("cannot list %s: %s", getattr(exc, "filename", "?"), one_line(exc))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        folder = Path(dirpath)
        real = os.path.realpath(dirpath)
        if real in seen or not (real + os.sep).startswith(real_root):
            dirnames[:] = []
            continue
        seen.add(real)
        depth = len(folder.relative_to(root).parts)
        if max_depth is not None and depth >= max_depth:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(n for n in dirnames if not hidden(n))
        yield folder, dirnames, sorted(n for n in filenames if not hidden(n))


def subdirs(folder: Path) -> list[Path]:
    """The visible subfolders of ``folder``, sorted (scandir: no stat per plain file)."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if not hidden(e.name) and e.is_dir()]
    except OSError:
        return []
    return [folder / name for name in sorted(names)]


def child(folder: Path, name: str) -> Path:
    """``folder / name``, matching an existing entry case-insensitively."""
    exact = folder / name
    if exact.exists():
        return exact
    low = name.lower()
    try:
        for entry in folder.iterdir():
            if entry.name.lower() == low:
                return entry
    except OSError:
        pass
    return exact


def is_dicom_file(path: Path) -> bool:
    """True for a file with ``DICM`` after the 128-byte preamble (:func:`~anunet_core.io.dicom.has_dicom_preamble`);
    ``DICOMDIR`` and obvious non-DICOM extensions are refused without opening the file."""
    if not might_be_dicom_slice(path):
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a FIFO (it blocks) or a device
            return False
    except OSError:
        return False
    return has_dicom_preamble(path)


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (not hidden, not DICOMDIR), sorted by path."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not hidden(p.name) and p.is_file() and is_dicom_file(p)]


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def safe_part(raw: str) -> str:
    """A filesystem-safe spelling of one name; changed names get a hash of the original."""
    safe = _UNSAFE_CHARS.sub("_", raw).lstrip(".-").rstrip(".")
    if not safe:
        safe = "case"
    if safe != raw:
        safe = f"{safe}-{short_hash(raw)}"
    return safe


def folder_id(root: Path, folder: Path) -> str:
    """Case id of a case folder: its path below the root joined by ``__`` (root: its name)."""
    if folder == root:
        return safe_part(root.name or "archive")
    return "__".join(safe_part(part) for part in folder.relative_to(root).parts)


def unique_ids(root: Path, cases: list[Case]) -> list[Case]:
    """Cap id lengths, make ids unique (case-insensitively), sort by case id."""
    out: list[Case] = []
    for c in cases:
        if len(c.case_id) > _MAX_ID_CHARS:
            new = f"{c.case_id[: _MAX_ID_CHARS - 9]}-{short_hash(c.case_id)}"
            c = _renamed(c, new)
        out.append(c)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(out):
        groups[c.case_id.lower()].append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for i in members:
            c = out[i]
            rel = os.path.relpath(c.image, root)
            new = f"{c.case_id}-{short_hash(rel)}"
            log.warning(
                "case id %s is not unique in %s: %s is called %s", c.case_id, root, rel, new
            )
            out[i] = _renamed(c, new)
    return sorted(out, key=lambda c: c.case_id)


def _renamed(case: Case, new_id: str) -> Case:
    patient = new_id if case.patient_id == case.case_id else case.patient_id
    return Case(new_id, patient, case.layout, case.image, case.label, case.modality)


def first_existing(paths: Iterable[Path], what: str) -> Path | None:
    found = [p for p in paths if p.is_file()]
    if len(found) > 1:
        log.warning("%s: several candidates %s; using %s", what, [p.name for p in found], found[0])
    return found[0] if found else None


def nifti_files(folder: Path) -> dict[str, Path]:
    """``{base name: path}`` of the NIfTI files directly in ``folder`` (.nii.gz preferred)."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if hidden(path.name) or not path.is_file():
            continue
        stem = nifti_stem(path.name)
        if stem is None:
            continue
        if stem in out:
            keep = out[stem] if out[stem].name.lower().endswith(".gz") else path
            log.warning("%s: both .nii and .nii.gz for %s; using %s", folder, stem, keep.name)
            out[stem] = keep
        else:
            out[stem] = path
    return out


def png_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if not hidden(p.name) and p.is_file() and p.name.lower().endswith(".png")
    ]
