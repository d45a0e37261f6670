"""Load one case (image and organ mask on the image's grid), and the files it reads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom

from anunet_core.archives.case import ArchiveError, Case
from anunet_core.archives.chaos import read_chaos_labels
from anunet_core.archives.discovery import check_layout, layout_module
from anunet_core.archives.names import dicom_files, png_files
from anunet_core.errors import one_line
from anunet_core.io.dicom import read_dicom_series
from anunet_core.io.labels import align_label_to_image
from anunet_core.io.nifti import read_label_nifti, read_nifti
from anunet_core.io.volume import (
    DEFAULT_MAX_VOXELS,
    LabelMismatchError,
    Volume,
    VolumeReadError,
    check_max_voxels,
)
from anunet_core.preprocessing import label_to_mask
from anunet_core.vocabulary import MODALITIES, validate_modality, validate_organ

__all__ = ["case_checksum", "default_label_values", "load_case", "source_files"]

_CHUNK_BYTES = 1 << 20


def _organ(organ: str) -> str:
    try:
        return validate_organ(organ)
    except ValueError as exc:
        raise ArchiveError(one_line(exc)) from exc


def default_label_values(layout: str, organ: str) -> frozenset[int]:
    """The label values that make up ``organ`` in ``layout``'s label files.

    =========  =============  =============  =============
    layout     liver          spleen         kidney
    =========  =============  =============  =============
    lits       {1, 2}         ArchiveError   ArchiveError
    msd        {1, 2}         {1, 2}         {1, 2}
    chaos      {5}            {1}            {2, 3}
    dicom      {5}            {1}            {2, 3}
    pairs      {5}            {1}            {2, 3}
    =========  =============  =============  =============

    (chaos after PNG decoding, dicom and pairs use TotalSegmentator's codes; the paper's
    kidney is both kidneys; :mod:`anunet_core.vocabulary` holds every table.)
    """
    check_layout(layout, allow_auto=False)
    return layout_module(layout).label_values(_organ(organ))


def _label_values(values: Iterable[int] | int) -> frozenset[int]:
    if isinstance(values, (str, bytes)):
        raise ArchiveError(f"label_values must be integers, got the string {values!r}")
    if isinstance(values, (int, np.integer)):
        values = [values]
    out = set()
    try:
        for v in values:
            if isinstance(v, (bool, np.bool_)) or int(v) != v:
                raise ValueError
            out.add(int(v))
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"label_values must be integers, got {values!r}") from exc
    if not out:
        raise ArchiveError("label_values must name at least one label value")
    return frozenset(out)


def _resolve_modality(case: Case, modality: str | None) -> str | None:
    if modality is None:
        return case.modality
    try:
        mod = validate_modality(modality)
    except ValueError as exc:
        raise ArchiveError(one_line(exc)) from exc
    if case.modality is not None and case.modality != mod:
        raise ArchiveError(
            f"{case.image}: a {case.layout} case holds {case.modality} scans, got modality={mod!r}"
        )
    return mod


def _check_dicom_modality(folder: Path, modality: str) -> None:
    """An explicit modality must not contradict the series' own Modality tag (CT/MR)."""
    for path in dicom_files(folder)[:1]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # unreadable: read_dicom_series reports it with the reason
            return
        tag = str(ds.get("Modality", "") or "").strip().upper()
        if tag in MODALITIES and tag != modality:
            raise ArchiveError(
                f"{path}: DICOM Modality is {tag}, but modality={modality!r} was asked"
            )


def load_case(
    case: Case,
    organ: str,
    modality: str | None = None,
    label_values: Iterable[int] | None = None,
    with_label: bool = True,
    *,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> tuple[Volume, np.ndarray | None]:
    """Read a case's image and its binary ``organ`` mask on the image's voxel grid.

    Args:
        case: from :func:`discover_cases`.
        organ: ``liver``, ``spleen`` or ``kidney`` (checked even when no label is read).
        modality: ``"CT"``/``"MR"``. Required for NIfTI images unless the layout implies it
            (lits CT, chaos MR); for DICOM the Modality tag is used when None. A value that
            contradicts the layout or the DICOM Modality tag raises :class:`ArchiveError`.
        label_values: the label values that are the organ; default
            :func:`default_label_values` of the case's layout.
        with_label: False: read only the image (the mask is None).
        max_voxels: the largest image (and NIfTI label) read, in voxels, checked on the
            headers before any pixel is read: above it
            :class:`~anunet_core.io.volume.VolumeTooLarge` (a ``VolumeReadError``:
            ``"{path}: too large ({n} voxels, above the cap of {cap}; raise --max-voxels)"``).
            None: no cap. Default :data:`~anunet_core.io.volume.DEFAULT_MAX_VOXELS`.

    Returns:
        ``(image, mask)``: the image :class:`Volume` (``case_id`` = ``case.case_id``) and a
        uint8 0/1 array of ``image.shape`` (label aligned through the affines with
        :func:`~anunet_core.io.align_label_to_image`; CHAOS PNGs placed by slice
        position), or None when ``with_label`` is False or the case has no label.

    Raises:
        VolumeReadError, LabelMismatchError, ArchiveError: one line naming the file.
    """
    try:
        max_voxels = check_max_voxels(max_voxels)
    except ValueError as exc:
        raise ArchiveError(one_line(exc)) from exc
    organ = _organ(organ)
    mod = _resolve_modality(case, modality)
    read_label = with_label and case.label is not None
    # before any pixel is read: a wrong organ, layout or value list fails fast
    values = None if label_values is None else _label_values(label_values)
    if read_label and values is None:
        values = default_label_values(case.layout, organ)

    if case.image.is_dir():
        if mod is not None and case.modality is None:
            _check_dicom_modality(case.image, mod)
        image = read_dicom_series(case.image, modality=mod, case_id=case.case_id, max_voxels=max_voxels)
    elif not case.image.exists():
        raise VolumeReadError(f"{case.image}: no such file or folder")
    else:
        if mod is None:
            raise ArchiveError(
                f"{case.image}: NIfTI has no modality tag; pass modality='CT' or 'MR'"
            )
        image = read_nifti(case.image, mod, case_id=case.case_id, max_voxels=max_voxels)

    if not read_label:
        return image, None
    if case.layout == "chaos":
        labels = read_chaos_labels(case.label, case.image, image)
    else:
        if not case.label.is_file():
            raise VolumeReadError(f"{case.label}: no such label file")
        label_array, label_affine = read_label_nifti(case.label, max_voxels=max_voxels)
        try:
            labels = align_label_to_image(label_array, label_affine, image)
        except LabelMismatchError as exc:
            raise LabelMismatchError(
                f"{case.label}: does not line up with {case.image.name}: {one_line(exc)}"
            ) from exc
    return image, label_to_mask(labels, values)


def source_files(case: Case) -> list[Path]:
    """Every file the case reads: the image (NIfTI file or the series' DICOM files) and its
    label (NIfTI file or the CHAOS PNGs), sorted. A missing image or label raises
    :class:`ArchiveError`."""
    files: list[Path] = []
    if case.image.is_dir():
        dicom = dicom_files(case.image)
        if not dicom:
            raise ArchiveError(f"{case.image}: no DICOM files")
        files += dicom
    elif case.image.is_file():
        files.append(case.image)
    else:
        raise ArchiveError(f"{case.image}: no such file or folder")
    if case.label is not None:
        if case.label.is_dir():
            pngs = png_files(case.label)
            if not pngs:
                raise ArchiveError(f"{case.label}: no PNG files")
            files += pngs
        elif case.label.is_file():
            files.append(case.label)
        else:
            raise ArchiveError(f"{case.label}: no such label file or folder")
    return sorted(set(files))


def case_checksum(case: Case) -> str:
    """SHA-256 (hex) identifying the case's content, independent of where the archive lies.

    ``sha256("".join(f"{rel}\\0{sha256(content)}\\n" for each file))`` over
    :func:`source_files` in order, ``rel`` being the file's path (``/``-separated) relative to
    the deepest folder holding all of them. Files are streamed in 1 MiB chunks.
    """
    files = source_files(case)
    base = Path(os.path.commonpath([str(p.parent) for p in files]))
    outer = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    inner.update(chunk)
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot read: {one_line(exc)}") from exc
        rel = path.relative_to(base).as_posix()
        outer.update(os.fsencode(rel) + b"\0" + inner.hexdigest().encode("ascii") + b"\n")
    return outer.hexdigest()
