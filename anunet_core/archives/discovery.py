"""Which layout an archive has, and its cases: names and cheap headers only.

Discovery looks only at names and at most 132 bytes of a file (to recognise DICOM): it never
reads pixels, so it is fast on big archives, and a corrupt file is *not* found here but in
:func:`~anunet_core.archives.loading.load_case`.

Detection order (:func:`detect_layout`): chaos (``MR/<id>/T2SPIR`` or ``T1DUAL``), msd
(``imagesTr``/``imagesTs`` in the root or up to 2 levels down), lits (``volume-N.nii*`` or
``test-volume-N.nii*`` up to 2 levels deep), dicom (any DICOM file anywhere), pairs (any
NIfTI file anywhere). So an archive of NIfTI pairs with one stray DICOM file is detected as
``dicom``: pass ``layout="pairs"``.

``require_labels``: discovery never drops a case silently. With ``require_labels=True`` only
cases that are unlabelled *by design* are left out (LiTS ``test-volume-N``, MSD ``imagesTs``);
every other case is returned, with ``label=None`` when its label file is missing: the caller
decides (ingest lists it as an error).
"""

from __future__ import annotations

import os
from pathlib import Path

from anunet_core.archives import chaos, dicom, lits, msd, pairs
from anunet_core.archives.case import LAYOUTS, ArchiveError, Case
from anunet_core.archives.names import is_dicom_file, nifti_stem, unique_ids, walk

__all__ = ["check_layout", "detect_layout", "discover_cases", "layout_module"]

_LAYOUT_MODULES = {"lits": lits, "chaos": chaos, "msd": msd, "dicom": dicom, "pairs": pairs}
_DETECTION_ORDER: tuple[str, ...] = ("chaos", "msd", "lits", "dicom", "pairs")
assert set(_LAYOUT_MODULES) == set(LAYOUTS)


def layout_module(layout: str):
    """The module that knows ``layout`` (its ``discover``, ``label_values``, ``HINT``)."""
    return _LAYOUT_MODULES[check_layout(layout, allow_auto=False)]


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(os.fspath(root)))  # absolute, symlinks kept (names stay)
    if not path.exists():
        raise ArchiveError(f"{path}: no such archive folder")
    if not path.is_dir():
        raise ArchiveError(f"{path}: not a folder (an archive is a folder of scans)")
    return path


def check_layout(layout: str, allow_auto: bool) -> str:
    name = str(layout).strip().lower()
    if name == "auto" and allow_auto:
        return name
    if name not in LAYOUTS:
        choices = ("auto",) + LAYOUTS if allow_auto else LAYOUTS
        raise ArchiveError(f"unknown archive layout {layout!r}; choose one of {', '.join(choices)}")
    return name


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of the archive at ``root`` (one of :data:`LAYOUTS`), from names only.

    Markers, tried in this order: chaos (``MR/<id>/T2SPIR`` or ``T1DUAL``, ``MR`` being the
    root, ``ROOT/MR`` or ``ROOT/*/MR``), msd (``imagesTr``/``imagesTs`` in the root or up to 2
    levels down), lits (``volume-N.nii[.gz]`` up to 2 levels deep), dicom (a file with the DICOM
    preamble anywhere: 132 bytes read per candidate file, stopping at the first), pairs (any
    NIfTI file). Nothing recognisable (or an empty folder) raises :class:`ArchiveError`.
    """
    root = _check_root(root)
    for name in ("chaos", "msd", "lits"):  # markers in names only
        if _LAYOUT_MODULES[name].is_present(root):
            return name
    has_nifti = False
    n_files = 0
    for folder, _, files in walk(root):
        for name in files:
            n_files += 1
            if nifti_stem(name) is not None:
                has_nifti = True
            elif is_dicom_file(folder / name):
                return "dicom"
    if has_nifti:
        return "pairs"
    what = "it is empty" if n_files == 0 else f"none of its {n_files} files is a scan"
    raise ArchiveError(
        f"no cases found in {root} ({what}); tried layouts "
        + "; ".join(f"{name}: {_LAYOUT_MODULES[name].HINT}" for name in _DETECTION_ORDER)
    )


def discover_cases(
    root: str | os.PathLike, layout: str = "auto", require_labels: bool = False
) -> list[Case]:
    """The cases of the archive at ``root``, sorted by ``case_id``.

    Args:
        root: the archive's folder.
        layout: ``"auto"`` (:func:`detect_layout`) or one of :data:`LAYOUTS` to force it;
            anything else raises :class:`ArchiveError` listing the layouts.
        require_labels: leave out the cases that are unlabelled by design (LiTS
            ``test-volume-N``, MSD ``imagesTs``). Nothing else is dropped: a case whose label
            file is missing is returned with ``label=None`` and the caller reports it.

    Only names and cheap headers are read: corrupt files are found by :func:`load_case`.
    No case at all raises :class:`ArchiveError` (``"no cases found in <root> ..."``).
    """
    layout = check_layout(layout, allow_auto=True)
    root = _check_root(root)
    if layout == "auto":
        layout = detect_layout(root)
    cases = _LAYOUT_MODULES[layout].discover(root, bool(require_labels))
    if not cases:
        raise ArchiveError(
            f"no cases found in {root} for layout {layout!r} (expected {_LAYOUT_MODULES[layout].HINT})"
        )
    return unique_ids(root, cases)
