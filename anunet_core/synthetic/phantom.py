"""One synthetic scan: :class:`Phantom` and :func:`make_phantom`.

Arrays and geometry
    ``image`` and ``labels`` have shape ``(I, J, K)``: ``i`` runs toward the patient's right,
    ``j`` toward anterior, ``k`` toward superior (axial slices are ``image[:, :, k]``).
    ``affine`` maps voxel ``(i, j, k, 1)`` to RAS+ world millimetres (nibabel's convention:
    ``aff2axcodes(affine) == ("R", "A", "S")``), spacing on the diagonal, the field of view
    centred on the scanner's isocentre in x and y, and a per-case table position in z.
    CT ``image`` is in Hounsfield units (air -1000, clipped at -1024); MR ``image`` is in
    arbitrary units (>= 0) with a smooth multiplicative bias field. Every value is a whole
    number (stored in float32), so it survives DICOM's integer pixels exactly.

The patient lies off-centre by up to 25 mm (left-right) and 18 mm (front-back), and the scan
range shifts by +-35 mm along z (cropping the liver dome or the lower renal poles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from anunet_core.synthetic.anatomy import draw_anatomy
from anunet_core.synthetic.appearance import render
from anunet_core.synthetic.shapes import Grid
from anunet_core.vocabulary import validate_modality

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "MR_SEQUENCES", "Phantom", "case_seed", "make_phantom"]

DEFAULT_SHAPE: tuple[int, int, int] = (128, 128, 48)
"""``(I, J, K)`` voxels: 384 x 384 mm in-plane and 240 mm along z at the default spacing."""
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 3.0, 5.0)
"""Voxel size in mm along ``(i, j, k)``."""
MR_SEQUENCES: tuple[str, ...] = ("T2SPIR", "T1")
"""MR sequences a phantom can show (the first is the default); the order fixes the random
stream of each, so it never changes."""


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic scan.

    Attributes:
        case_id: e.g. ``"case_0000"``.
        modality: ``"CT"`` or ``"MR"``.
        image: float32 ``(I, J, K)``; CT in HU, MR in arbitrary units; whole numbers.
        labels: uint8 ``(I, J, K)``; values in :data:`anunet_core.vocabulary.TOTALSEG_LABELS`.
        affine: float64 ``(4, 4)`` voxel -> RAS+ mm.
        lesions: bool ``(I, J, K)``; liver lesions (a subset of ``labels == 5``).
        tissue: uint8 ``(I, J, K)``; the tissue classes the image was rendered from (names in
            :data:`~anunet_core.synthetic.tissues.TISSUES`), e.g. to check intensities per tissue.
        seed: the seed it was made from.
        sequence: MR sequence (``"T2SPIR"`` or ``"T1"``); ``None`` for CT.
    """

    case_id: str
    modality: str
    image: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    lesions: np.ndarray = field(repr=False)
    tissue: np.ndarray = field(repr=False)
    seed: int = 0
    sequence: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(I, J, K)`` voxels."""
        i, j, k = self.image.shape
        return (int(i), int(j), int(k))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)`` (norms of the affine's columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of an archive made with ``seed``: ``seed * 100003 + index``."""
    return int(seed) * 100003 + int(index)


def make_phantom(
    seed: int,
    modality: str = "CT",
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    *,
    sequence: str | None = None,
    case_id: str | None = None,
) -> Phantom:
    """Make one synthetic abdomen scan.

    The anatomy (``labels``, ``lesions``) depends on ``seed`` only: the CT and the MR phantom of
    one seed show the same patient. The appearance depends on ``seed`` and the modality.

    Args:
        seed: any non-negative int; the same seed gives identical arrays.
        modality: ``"CT"`` (HU) or ``"MR"`` (arbitrary units). Default ``"CT"``.
        shape: ``(I, J, K)`` voxels, ``k`` axial. Default ``(128, 128, 48)``.
        spacing: voxel size in mm along ``(i, j, k)``. Default ``(3.0, 3.0, 5.0)``.
        sequence: MR only: ``"T2SPIR"`` (fat suppressed T2, CHAOS-like: spleen and kidneys
            brighter than liver, fat dark) or ``"T1"`` (liver brighter than spleen, fat
            bright). Default ``None`` -> ``"T2SPIR"`` for MR.
        case_id: default ``f"case_{seed:04d}"``.

    Returns:
        a :class:`Phantom`.
    """
    modality, sequence, shape, spacing, seed = _checked(modality, sequence, shape, spacing, seed)
    anat = np.random.default_rng([seed, 0])
    affine, grid = _scan_geometry(anat, shape, spacing)
    tissue, labels, lesions = draw_anatomy(anat, grid)
    stream = 1 if modality == "CT" else 2 + MR_SEQUENCES.index(sequence)
    image = render(np.random.default_rng([seed, stream]), tissue, grid, modality, sequence)
    return Phantom(
        case_id=case_id if case_id is not None else f"case_{seed:04d}",
        modality=modality,
        image=image,
        labels=labels,
        affine=affine,
        lesions=lesions,
        tissue=tissue,
        seed=seed,
        sequence=sequence,
    )


def _checked(modality, sequence, shape, spacing, seed):
    """``make_phantom``'s arguments checked (``ValueError`` naming the bad one) and normalised:
    ``(modality, sequence, shape, spacing, seed)``."""
    modality = validate_modality(modality)
    if modality == "CT" and sequence is not None:
        raise ValueError(f"sequence is for MR only, got {sequence!r} with modality 'CT'")
    if modality == "MR":
        sequence = sequence or MR_SEQUENCES[0]
        if sequence not in MR_SEQUENCES:
            raise ValueError(f"sequence must be one of {MR_SEQUENCES}, got {sequence!r}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3 ints >= 4, got {shape!r}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive mm values, got {spacing!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    return modality, sequence, shape, spacing, seed


def _scan_geometry(
    anat: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[np.ndarray, Grid]:
    """The scan's affine (voxel -> RAS+ mm, ``(4, 4)``) and the body-centred grid (mm).

    The field of view is centred on the isocentre in x, y, with a per-case table position in
    z; the patient lies off-centre and the scan range covers the anatomy with a random shift.
    """
    table_z = float(np.round(anat.uniform(-700, -300) * 2) / 2)
    origin = np.array(
        [-(shape[0] - 1) / 2 * spacing[0], -(shape[1] - 1) / 2 * spacing[1], table_z])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    body_x, body_y = anat.uniform(-25, 25), anat.uniform(-18, 18)
    z_shift = 15.0 + anat.uniform(-35, 35)
    x = origin[0] + spacing[0] * np.arange(shape[0]) - body_x
    y = origin[1] + spacing[1] * np.arange(shape[1]) - body_y
    z = spacing[2] * (np.arange(shape[2]) - (shape[2] - 1) / 2) + z_shift
    return affine, Grid(x[:, None, None], y[None, :, None], z[None, None, :], spacing)
