"""One synthetic archive in any supported layout: :func:`make_archive`, the single entry point
of ``jobs/make_synthetic.py``.

=======  ==========  ==========================================================
fmt      layout      writer
=======  ==========  ==========================================================
nifti    pairs       :func:`~anunet_core.synthetic.nifti.write_nifti_pairs`
nifti    msd         :func:`~anunet_core.synthetic.nifti.write_msd` (one organ)
nifti    lits        :func:`~anunet_core.synthetic.nifti.write_lits`
dicom    dicom       :func:`~anunet_core.synthetic.dicom.write_dicom_archive`
dicom    chaos       :func:`~anunet_core.synthetic.chaos.write_chaos_mr` (MR only)
=======  ==========  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from anunet_core.synthetic.chaos import write_chaos_mr
from anunet_core.synthetic.dicom import write_dicom_archive
from anunet_core.synthetic.nifti import write_lits, write_msd, write_nifti_pairs
from anunet_core.synthetic.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, Phantom, case_seed, make_phantom
from anunet_core.vocabulary import validate_modality, validate_organ

__all__ = ["LAYOUTS", "make_archive"]

LAYOUTS: dict[str, tuple[str, ...]] = {"nifti": ("pairs", "msd", "lits"), "dicom": ("dicom", "chaos")}
"""Archive format -> its layouts (the first is the default)."""

# layout -> write(out, phantom, index, organ, standard_orientation) -> written paths
_WRITERS: dict[str, Callable[[Path, Phantom, int, str, bool], list[Path]]] = {
    "pairs": lambda out, p, i, organ, std: write_nifti_pairs(out, [p]),
    "msd": lambda out, p, i, organ, std: write_msd(out, [p], organ),
    "lits": lambda out, p, i, organ, std: write_lits(out, [p], first_index=i),
    "dicom": lambda out, p, i, organ, std: write_dicom_archive(out, [p], standard_orientation=std),
    "chaos": lambda out, p, i, organ, std: write_chaos_mr(out, [p], first_index=i,
                                                           standard_orientation=std),
}


def make_archive(
    out_dir: str | os.PathLike,
    cases: int,
    modality: str,
    fmt: str,
    layout: str | None = None,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    *,
    organ: str = "liver",
    sequence: str | None = None,
    standard_orientation: bool = False,
) -> list[Path]:
    """Make ``cases`` phantoms and write them as one archive.

    Case ``i`` is ``make_phantom(case_seed(seed, i), modality, shape, spacing)`` with case id
    ``f"case_{i:04d}"``: archives are reproducible and their cases differ.

    Args:
        out_dir: the archive's root folder (created).
        cases: number of cases (>= 1).
        modality: ``"CT"`` or ``"MR"``.
        fmt: ``"nifti"`` or ``"dicom"``.
        layout: nifti: ``"pairs"`` (default), ``"msd"``, ``"lits"``; dicom: ``"dicom"``
            (default; DICOM series + NIfTI labels) or ``"chaos"`` (MR only).
        seed: archive seed. Default 0.
        shape, spacing: ``(I, J, K)`` voxels and their size in mm; see :func:`make_phantom`.
        organ: the organ labelled in the ``"msd"`` layout. Default ``"liver"``.
        sequence: MR sequence (see :func:`make_phantom`); default ``"T2SPIR"``.
        standard_orientation: DICOM layouts: see :func:`write_dicom_series`. Default ``False``.

    Returns:
        what the layout's writer returns: case folders (pairs, dicom, chaos), image files
        (msd) or volume files (lits).
    """
    layout, modality, organ = _checked(cases, modality, fmt, layout, organ)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write = _WRITERS[layout]
    written: list[Path] = []
    for i in range(int(cases)):  # one phantom in memory at a time
        p = make_phantom(case_seed(seed, i), modality, shape, spacing, sequence=sequence,
                         case_id=f"case_{i:04d}")
        written += write(out, p, i, organ, standard_orientation)
    return written


def _checked(cases: int, modality: str, fmt: str, layout: str | None, organ: str) -> tuple[str, str, str]:
    """``(layout, modality, organ)`` checked (``ValueError`` naming the bad one) and normalised."""
    if fmt not in LAYOUTS:
        raise ValueError(f"fmt must be 'nifti' or 'dicom', got {fmt!r}")
    layout = layout or LAYOUTS[fmt][0]
    if layout not in LAYOUTS[fmt]:
        raise ValueError(f"layout for fmt {fmt!r} must be one of {LAYOUTS[fmt]}, got {layout!r}")
    modality = validate_modality(modality)
    if layout == "chaos" and modality != "MR":
        raise ValueError(f"the CHAOS layout holds MR scans, got modality {modality!r}")
    if layout == "msd":
        organ = validate_organ(organ)
    if int(cases) < 1:
        raise ValueError(f"cases must be >= 1, got {cases!r}")
    return layout, modality, organ
