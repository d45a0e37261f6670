"""Synthetic abdomen phantoms (CT and MR) and the archives that hold them, for demos and tests.

A phantom is one 3D scan of a made-up abdomen with its label map: an elliptical body with a
subcutaneous fat ring and an abdominal wall with ribs, the lung bases and the heart above a
domed diaphragm, a spine with vertebral bodies, discs and posterior elements, paraspinal and
psoas muscles, aorta and inferior vena cava, bowel loops (gas, fluid, enhancing wall, oral
contrast) and vessels in mesenteric fat, the stomach with an air-fluid level, the gallbladder,
the pancreas, and the organs the ANU-Net paper segments: liver (with vessels and 1-3
hypodense lesions), spleen and both kidneys (cortex, medulla, sinus). Everything is drawn in
millimetres, so a phantom of any ``shape`` and ``spacing`` shows the same anatomy, cropped by
its field of view.

Arrays and geometry
    ``image`` and ``labels`` have shape ``(I, J, K)``: ``i`` runs toward the patient's right,
    ``j`` toward anterior, ``k`` toward superior (axial slices are ``image[:, :, k]``).
    ``affine`` maps voxel ``(i, j, k, 1)`` to RAS+ world millimetres (nibabel's convention:
    ``aff2axcodes(affine) == ("R", "A", "S")``), spacing on the diagonal, the field of view
    centred on the scanner's isocentre in x and y, and a per-case table position in z.
    CT ``image`` is in Hounsfield units (air -1000, clipped at -1024); MR ``image`` is in
    arbitrary units (>= 0) with a smooth multiplicative bias field. Every value is a whole
    number (stored in float32), so it survives DICOM's integer pixels exactly.

Label values (TotalSegmentator's CT "total" class map, used for both modalities)

    =====  =========================  ====================================
    value  structure                  notes
    =====  =========================  ====================================
    0      background                 everything not listed
    1      spleen                     CHAOS PNG code 252
    2      kidney_right               CHAOS PNG code 126 (includes sinus)
    3      kidney_left                CHAOS PNG code 189 (includes sinus)
    4      gallbladder
    5      liver                      CHAOS PNG code 63 (includes lesions)
    6      stomach
    7      pancreas
    11     lung_lower_lobe_left       lung bases above the diaphragm
    14     lung_lower_lobe_right
    26-43  vertebrae S1 ... T1        26 = S1, 27 = L5, 31 = L1, 32 = T12, 34 = T10
    51     heart
    52     aorta
    63     inferior_vena_cava
    =====  =========================  ====================================

    Discs, spinal canal, ribs, muscles, fat and bowel are unlabelled (0). The liver lesions
    are in ``Phantom.lesions`` (a boolean mask inside the liver), written as label 2 by
    :func:`write_lits`.

Why it is hard (a model that learns nothing scores badly)
    Contrast-enhanced liver (100-140 HU) and spleen (110-150 HU) are drawn independently per
    case, so their intensities overlap and swap: they are told apart only by shape and
    position (liver right and anterior, spleen left and posterior). Enhancing bowel wall
    (70-140 HU), the pancreas, the IVC and mesenteric veins, the heart and the renal medulla
    share the liver's intensity window; lesions and vessels make the liver heterogeneous, and
    the noise (10-20 HU sd) blurs the rest. Position, size and shape vary per case: the
    patient lies off-centre by up to 25 mm (left-right) and 18 mm (front-back), the scan range
    shifts by +-35 mm along z (cropping the liver dome or the lower renal poles), body and
    organ sizes vary by about +-15-20 % per axis, and random low-frequency surface modes
    deform every organ. MR adds a per-case gain, +-15 % per-tissue jitter, a bias field
    (x0.7 .. x1.4 across the body) and Rician noise. Scores of predictors that learn nothing
    (:func:`trivial_predictor_dice`, 12 training and 6 test phantoms, five cohorts): liver
    Dice 0.50-0.65 for the fixed mask, 0.59-0.63 for the best CT HU window, 0.37-0.58 for the
    best T2SPIR and 0.40-0.66 for the best T1 intensity window; spleen and kidneys at most
    0.48. So a trained model's liver Dice of 0.9 or more comes from learning shape and
    context.

Archives (the layouts ``jobs/ingest.py`` discovers; files are written to a temporary name and
renamed, DICOM series and CHAOS folders as a whole folder):

- :func:`write_nifti_pairs`: ``OUT/<case_id>/image.nii.gz`` + ``labels.nii.gz``
- :func:`write_msd`: ``OUT/imagesTr/<case_id>.nii.gz`` + ``OUT/labelsTr/<case_id>.nii.gz`` +
  ``dataset.json`` (labels: organ = 1, background = 0)
- :func:`write_lits`: ``OUT/volume-N.nii`` + ``OUT/segmentation-N.nii`` (liver 1, lesion 2)
- :func:`write_dicom_archive`: ``OUT/<case_id>/dicom/<SOPInstanceUID>.dcm`` +
  ``OUT/<case_id>/labels.nii.gz``
- :func:`write_chaos_mr`: ``OUT/MR/<n>/T2SPIR/DICOM_anon/IMG-0001-00001.dcm ...`` +
  ``OUT/MR/<n>/T2SPIR/Ground/IMG-0001-00001.png ...``
- :func:`make_archive`: the single entry point of ``jobs/make_synthetic.py``.

Example::

    >>> p = make_phantom(seed=7, modality="CT")
    >>> p.image.shape, p.image.dtype, p.labels.dtype
    ((128, 128, 48), dtype('float32'), dtype('uint8'))
    >>> nib.aff2axcodes(p.affine), p.spacing
    (('R', 'A', 'S'), (3.0, 3.0, 5.0))
    >>> case_dirs = make_archive("/tmp/synthetic-ct", cases=2, modality="CT", fmt="nifti")
    >>> [d.name for d in case_dirs]
    ['case_0000', 'case_0001']
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds
from scipy import ndimage

from anunet_core.atomic import write_atomic

__all__ = [
    "CHAOS_CODES",
    "CT_IMAGE_STORAGE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "LABELS",
    "MR_IMAGE_STORAGE",
    "ORGAN_LABELS",
    "Phantom",
    "TISSUES",
    "case_seed",
    "make_archive",
    "make_phantom",
    "read_png_gray",
    "trivial_predictor_dice",
    "write_chaos_mr",
    "write_dicom_archive",
    "write_dicom_series",
    "write_lits",
    "write_msd",
    "write_nifti_pairs",
    "write_png_gray",
]

DEFAULT_SHAPE: tuple[int, int, int] = (128, 128, 48)
"""``(I, J, K)`` voxels: 384 x 384 mm in-plane and 240 mm along z at the default spacing."""
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 3.0, 5.0)
"""Voxel size in mm along ``(i, j, k)``."""

LABELS: dict[str, int] = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "pancreas": 7,
    "lung_lower_lobe_left": 11,
    "lung_lower_lobe_right": 14,
    **{f"vertebrae_{level}": 26 + n for n, level in enumerate(
        ["S1", "L5", "L4", "L3", "L2", "L1", *(f"T{t}" for t in range(12, 0, -1))])},
    "heart": 51,
    "aorta": 52,
    "inferior_vena_cava": 63,
}
"""Structure name -> label value (TotalSegmentator CT "total" class map)."""

ORGAN_LABELS: dict[str, tuple[int, ...]] = {"liver": (5,), "spleen": (1,), "kidney": (2, 3)}
"""The paper's organs -> the label values that make up each (left + right kidney merged)."""

CHAOS_CODES: dict[int, int] = {5: 63, 2: 126, 3: 189, 1: 252}
"""Label value -> grey value of the CHAOS ground-truth PNGs (liver, kidney R, kidney L, spleen)."""

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_MR_SEQUENCES = ("T2SPIR", "T1")
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic scan.

    Attributes:
        case_id: e.g. ``"case_0000"``.
        modality: ``"CT"`` or ``"MR"``.
        image: float32 ``(I, J, K)``; CT in HU, MR in arbitrary units; whole numbers.
        labels: uint8 ``(I, J, K)``; values in :data:`LABELS`.
        affine: float64 ``(4, 4)`` voxel -> RAS+ mm.
        lesions: bool ``(I, J, K)``; liver lesions (a subset of ``labels == 5``).
        tissue: uint8 ``(I, J, K)``; the tissue classes the image was rendered from (names in
            :data:`TISSUES`), e.g. to check intensities per tissue.
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
        i, j, k = self.image.shape
        return (int(i), int(j), int(k))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)`` (norms of the affine's columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))


# --------------------------------------------------------------------------------------------
# anatomy: a tissue-class map and a label map, drawn in body-centred millimetres
# --------------------------------------------------------------------------------------------

# Tissue classes: the image is rendered from a map of these. Per class: name, CT per-case mean
# range (HU), nominal T1 and T2SPIR signal (arbitrary units; jittered +-15 % per tissue and
# scaled by a per-case gain), and the sd of the fine (8 mm) and coarse (20 mm) CT texture (HU).
_TISSUE_TABLE = (
    ("air", (-1000, -1000), 0, 0, (0, 0)),
    ("lung", (-880, -820), 15, 10, (25, 10)),
    ("fat", (-115, -85), 850, 90, (8, 4)),
    ("muscle", (40, 60), 330, 180, (8, 4)),
    ("liver", (100, 140), 480, 240, (6, 4)),
    ("liver_vessel", (150, 185), 120, 90, (0, 0)),  # CT: liver + 25..50 HU
    ("lesion", (40, 80), 280, 520, (8, 4)),  # CT: liver - 35..70 HU
    ("spleen", (110, 150), 390, 430, (6, 4)),  # MR: tied to the liver, see _appearance
    ("renal_cortex", (160, 200), 450, 480, (8, 4)),
    ("renal_medulla", (135, 165), 350, 620, (8, 4)),  # CT: cortex - 0..30 HU
    ("renal_sinus", (-40, 0), 600, 300, (0, 0)),
    ("artery", (150, 220), 80, 60, (0, 0)),
    ("vein", (110, 160), 100, 80, (0, 0)),
    ("heart", (120, 160), 220, 200, (10, 5)),
    ("bile", (0, 20), 150, 1100, (0, 0)),
    ("bowel_gas", (-950, -850), 10, 10, (0, 0)),
    ("bowel_fluid", (0, 25), 220, 800, (10, 30)),
    ("bowel_wall", (70, 140), 460, 270, (15, 30)),  # enhancing (jejunal) wall
    ("bowel_contrast", (180, 320), 300, 500, (30, 60)),
    ("stomach_fluid", (5, 35), 300, 700, (12, 25)),
    ("cancellous_bone", (330, 450), 560, 180, (40, 20)),
    ("cortical_bone", (750, 1000), 40, 30, (0, 0)),
    ("disc", (70, 100), 250, 450, (0, 0)),
    ("csf", (5, 25), 120, 1100, (0, 0)),
    ("rib", (450, 700), 300, 100, (0, 0)),
    ("pancreas", (90, 130), 500, 280, (10, 5)),
)
(
    T_AIR, T_LUNG, T_FAT, T_MUSCLE, T_LIVER, T_LIVER_VESSEL, T_LESION, T_SPLEEN, T_CORTEX,
    T_MEDULLA, T_SINUS, T_ARTERY, T_VEIN, T_HEART, T_BILE, T_BOWEL_GAS, T_BOWEL_FLUID,
    T_BOWEL_WALL, T_BOWEL_CONTRAST, T_STOMACH_FLUID, T_CANCELLOUS, T_CORTICAL, T_DISC, T_CSF,
    T_RIB, T_PANCREAS,
) = range(len(_TISSUE_TABLE))
TISSUES: dict[int, str] = {t: row[0] for t, row in enumerate(_TISSUE_TABLE)}
"""Tissue class (values of ``Phantom.tissue``) -> name."""
# MR texture (fine, coarse) as a fraction of the signal where it differs from (0.04, 0.02):
# bowel content varies a lot
_TEXTURE_MR = {T_BOWEL_WALL: (0.08, 0.3), T_BOWEL_FLUID: (0.08, 0.3),
               T_BOWEL_CONTRAST: (0.08, 0.3), T_STOMACH_FLUID: (0.08, 0.25)}


@dataclass(frozen=True)
class _Grid:
    """Body-centred coordinates (mm) of the voxel centres, broadcastable to ``(I, J, K)``.

    ``X`` toward the patient's right, ``Y`` anterior, ``Z`` superior (anatomical: the L1/L2
    disc is near ``Z = 0``).
    """

    X: np.ndarray  # (I, 1, 1)
    Y: np.ndarray  # (1, J, 1)
    Z: np.ndarray  # (1, 1, K)
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.X.shape[0], self.Y.shape[1], self.Z.shape[2])

    def box(self, center: Sequence[float], half: Sequence[float]) -> tuple[slice, slice, slice]:
        """Index ranges of the voxels within ``center +- half`` mm (possibly empty)."""
        out = []
        for axis, c, h in zip((self.X.ravel(), self.Y.ravel(), self.Z.ravel()), center, half):
            lo = int(np.searchsorted(axis, c - h, side="left"))
            hi = int(np.searchsorted(axis, c + h, side="right"))
            out.append(slice(lo, max(lo, hi)))
        return tuple(out)  # type: ignore[return-value]


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians); columns are the local axes in the world."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Blob:
    """A deformed superellipsoid: ``f(u) < 1`` inside, ``u`` = local coordinates / radii.

    ``f`` is the superellipsoid norm of ``u`` (exponent ``power``) after bending
    (``u_y -= bend * u_x**2``) minus a sum of random low-frequency cosine modes, so the surface
    is smooth but not an ellipsoid.
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: np.ndarray
    power: float = 2.0
    bend: float = 0.0
    modes: np.ndarray | None = None  # (M, 5): kx, ky, kz, phase, amplitude

    @staticmethod
    def random_modes(rng: np.random.Generator, amplitude: float, n: int = 6) -> np.ndarray:
        k = rng.normal(0.0, 1.6, size=(n, 3))
        phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
        amp = np.full((n, 1), amplitude / np.sqrt(n))
        return np.hstack([k, phase, amp])

    def half_extent(self) -> np.ndarray:
        reach = max(self.radii) * (1.0 + abs(self.bend)) * 1.3
        return np.full(3, reach)

    def field(self, grid: _Grid, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        """``(f, ux, uy, uz)`` on ``box`` (float32 arrays of the box's shape)."""
        dx = (grid.X[box[0]] - self.center[0]).astype(np.float32)
        dy = (grid.Y[:, box[1]] - self.center[1]).astype(np.float32)
        dz = (grid.Z[:, :, box[2]] - self.center[2]).astype(np.float32)
        r = self.rotation.astype(np.float32)
        u = [(dx * r[0, a] + dy * r[1, a] + dz * r[2, a]) / np.float32(self.radii[a])
             for a in range(3)]
        ux, uy, uz = (np.broadcast_to(v, _box_shape(box)) for v in u)
        if self.bend:
            uy = uy - np.float32(self.bend) * ux * ux
        if self.power == 2.0:
            f = np.sqrt(ux * ux + uy * uy + uz * uz)
        else:
            p = np.float32(self.power)
            f = (np.abs(ux) ** p + np.abs(uy) ** p + np.abs(uz) ** p) ** (1 / p)
        if self.modes is not None:
            for kx, ky, kz, ph, amp in self.modes:
                f = f - np.float32(amp) * np.cos(_phase(ux, uy, uz, kx, ky, kz, ph))
        return f.astype(np.float32, copy=False), ux, uy, uz

    def mask(self, grid: _Grid) -> np.ndarray:
        full = np.zeros(grid.shape, dtype=bool)
        box = grid.box(self.center, self.half_extent())
        if all(s.stop > s.start for s in box):
            full[box] = self.field(grid, box)[0] < 1.0
        return full


def _phase(ux, uy, uz, kx, ky, kz, ph) -> np.ndarray:
    """``k . u + phase`` of one surface mode, in float32."""
    f32 = np.float32
    return f32(kx) * ux + f32(ky) * uy + f32(kz) * uz + f32(ph)


def _box_shape(box: tuple[slice, slice, slice]) -> tuple[int, int, int]:
    return tuple(s.stop - s.start for s in box)  # type: ignore[return-value]


def _upsample(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` to ``n_out`` samples along ``axis`` (end points aligned)."""
    n_in = a.shape[axis]
    x = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(x).astype(int), n_in - 2)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = (x - i0).astype(np.float32).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i0 + 1, axis=axis) * w


def _smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], scale_mm: float
) -> np.ndarray:
    """Zero-mean, unit-sd float32 noise with features of about ``scale_mm`` mm.

    White noise smoothed with a Gaussian of sd scale / 2; for large features drawn on a coarse
    grid (cell = scale / 2), smoothed there and interpolated up (separable linear
    interpolation): fast.
    """
    step = scale_mm / 2.0
    coarse = [max(2, int(np.ceil(n * s / step)) + 1) for n, s in zip(shape, spacing)]
    if np.prod(coarse) * 8 > np.prod(shape):  # features near the voxel size: smooth in place
        noise = rng.standard_normal(tuple(shape), dtype=np.float32)
        out = ndimage.gaussian_filter(noise, [step / s for s in spacing])
    else:
        out = ndimage.gaussian_filter(
            rng.standard_normal(coarse, dtype=np.float32), 1.0, mode="wrap")
        for axis in range(3):
            out = _upsample(out, shape[axis], axis)
    out -= out.mean()
    return out / np.float32(max(float(out.std()), 1e-12))


def _superellipse(x: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    return (np.abs(x) ** p + np.abs(y) ** p) ** (1.0 / p)


class _Painter:
    """Paints structures into a tissue map and a label map (later paint wins)."""

    def __init__(self, shape: tuple[int, int, int]):
        self.tissue = np.full(shape, T_AIR, dtype=np.uint8)
        self.labels = np.zeros(shape, dtype=np.uint8)

    def __call__(self, mask: np.ndarray, tissue: int, label: int = 0) -> None:
        if mask.ndim == 2:
            self.tissue[mask, :] = tissue
            self.labels[mask, :] = label
        else:
            self.tissue[mask] = tissue
            self.labels[mask] = label


def _anatomy(rng: np.random.Generator, grid: _Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one abdomen: ``(tissue uint8, labels uint8, lesions bool)``, all ``(I, J, K)``.

    All random draws come from ``rng`` in a fixed order, so the result depends on the seed only.
    """
    X, Y, Z = grid.X, grid.Y, grid.Z
    X2, Y2 = X[:, :, 0], Y[:, :, 0]  # (I, 1), (1, J)
    shape = grid.shape
    paint = _Painter(shape)
    u = rng.uniform

    # ---- body wall: skin-fat ring, muscle wall, cavity ----------------------------------
    a, b = u(125, 160), u(92, 120)  # body semi-axes (lateral, AP), mm
    b_post = b * u(0.88, 0.96)  # flatter back
    p_body = u(2.0, 2.5)
    t_fat, fat_mod, fat_phase = u(8, 30), u(0.1, 0.35), u(-0.6, 0.6)
    wall = u(7, 13)
    b_y = np.where(Y2 >= 0, b, b_post)
    theta = np.arctan2(Y2 / b_y, X2 / a)  # 0 = patient's right, +pi/2 anterior
    t_eff = t_fat * (1 + fat_mod * np.sin(theta - fat_phase))
    body = _superellipse(X2 / a, Y2 / b_y, p_body) < 1
    fat_inner = _superellipse(X2 / (a - t_eff), Y2 / (b_y - t_eff), p_body) < 1
    cavity2 = _superellipse(X2 / (a - t_eff - wall), Y2 / (b_y - t_eff - wall), p_body) < 1
    A, B = a - t_fat - wall, b - t_fat - wall  # nominal cavity semi-axes
    y_back = -(b_post - t_fat)  # inner edge of the back fat at the midline

    paint(body, T_FAT)
    paint(fat_inner, T_MUSCLE)
    paint(cavity2, T_FAT)  # mesenteric / retroperitoneal fat; bowel and organs go in here

    # ---- diaphragm dome (per (x, y)), lungs and heart above it --------------------------
    z_apex_r = u(112, 132)
    z_apex_l = z_apex_r - u(8, 25)
    x_r, x_l, y_dome = A * u(0.3, 0.5), -A * u(0.3, 0.5), B * u(0.0, 0.25)
    cxx, cyy = u(60, 90), u(50, 80)
    dome_r = z_apex_r - cxx * ((X2 - x_r) / A) ** 2 - cyy * ((Y2 - y_dome) / B) ** 2
    dome_l = z_apex_l - cxx * ((X2 - x_l) / A) ** 2 - cyy * ((Y2 - y_dome) / B) ** 2
    dome = np.maximum(dome_r, dome_l)[:, :, None]  # (I, J, 1)
    cavity = cavity2[:, :, None]
    thorax = cavity & (Z > dome + 3.0)
    abdomen = cavity & (Z < dome - 3.0)
    xh, yh, rhx, rhy = -u(10, 30), B * u(0.15, 0.35), u(55, 75), u(45, 60)
    heart2 = ((X2 - xh) / rhx) ** 2 + ((Y2 - yh) / rhy) ** 2 < 1
    heart = thorax & heart2[:, :, None]
    lung = thorax & ~heart
    paint(cavity & ~thorax & ~abdomen, T_MUSCLE)  # the diaphragm itself
    paint(lung & (X > 0), T_LUNG, LABELS["lung_lower_lobe_right"])
    paint(lung & (X <= 0), T_LUNG, LABELS["lung_lower_lobe_left"])
    paint(heart, T_HEART, LABELS["heart"])

    # ---- spine and aorta geometry (painted last, drawn now to place other structures) -
    x_s, y_s = u(-3, 3), y_back + u(55, 65)
    rvx, rvy = u(19, 24), u(14, 18)
    r_a = u(9, 13)
    period, z_disc0, disc_half = u(33, 38), u(-6, 6), u(3.5, 5.0)

    # ---- bowel loops in the remaining abdominal cavity (not retroperitoneal) -----------
    loops = _smooth_noise(rng, shape, grid.spacing, 14.0)
    content = _smooth_noise(rng, shape, grid.spacing, 45.0)
    bowel_bias = u(-0.3, 0.3)
    # retroperitoneum (spine, kidneys, their fat): a flat ellipse around the spine
    retro = ((X2 - x_s) / (0.8 * A)) ** 2 + ((Y2 - y_s) / (rvy + u(22, 32))) ** 2 < 1
    bowel = (
        abdomen
        & ~retro[:, :, None]
        & (loops + 0.8 * (Y / B) - Z / 250.0 + bowel_bias > 0.1)
    )
    q = np.quantile(content[bowel], [0.10, 0.40, 0.85]) if bowel.any() else np.zeros(3)
    paint(bowel & (content < q[0]), T_BOWEL_GAS)
    paint(bowel & (content >= q[0]) & (content < q[1]), T_BOWEL_FLUID)
    paint(bowel & (content >= q[1]) & (content < q[2]), T_BOWEL_WALL)
    paint(bowel & (content >= q[2]), T_BOWEL_CONTRAST)
    # mesenteric vessels in the fat between the loops: curves where two fields cross zero
    g1 = _smooth_noise(rng, shape, grid.spacing, 35.0)
    g2 = _smooth_noise(rng, shape, grid.spacing, 35.0)
    width = np.float32(u(0.12, 0.2))
    mesenteric = (np.abs(g1) < width) & (np.abs(g2) < width)
    paint(mesenteric & abdomen & ~bowel & ~retro[:, :, None], T_VEIN)

    # ---- muscles: paraspinal (2D, all z) and psoas (grows inferiorly) -----------------
    for side in (1, -1):
        cx, cy = x_s + side * u(30, 36), y_back + u(20, 28)
        rx, ry = u(22, 28), u(18, 24)
        paint(fat_inner & (((X2 - cx) / rx) ** 2 + ((Y2 - cy) / ry) ** 2 < 1), T_MUSCLE)
    z_psoas, psoas_rate, psoas_max = u(-40, -10), u(0.15, 0.22), u(18, 25)
    r_ps = np.clip((z_psoas - Z) * psoas_rate, 0, psoas_max)  # (1, 1, K)
    for side in (1, -1):
        cx = x_s + side * (rvx + 0.8 * r_ps)
        cy = y_s + u(-3, 3)
        psoas = ((X - cx) ** 2 + (Y - cy) ** 2 < r_ps**2) & (r_ps > 0) & cavity
        paint(psoas, T_MUSCLE)

    # ---- stomach (left upper quadrant, air-fluid level anteriorly) ---------------------
    stomach = _Blob(
        center=(-A * u(0.2, 0.4), B * u(0.05, 0.3), u(50, 80)),
        radii=(u(35, 55), u(25, 38), u(40, 60)),
        rotation=_rotation(yaw=u(-0.5, 0.3), pitch=u(-0.3, 0.3)),
        modes=_Blob.random_modes(rng, u(0.06, 0.12)),
    )
    gas_level = stomach.center[1] + stomach.radii[1] * u(0.1, 0.6)
    st = stomach.mask(grid) & abdomen
    st_inner = ndimage.binary_erosion(st, iterations=1)
    paint(st, T_BOWEL_WALL, LABELS["stomach"])
    paint(st_inner & (Y > gas_level), T_BOWEL_GAS, LABELS["stomach"])
    paint(st_inner & (Y <= gas_level), T_STOMACH_FLUID, LABELS["stomach"])

    # ---- liver: right lobe + left lobe, smooth union, deformed --------------------------
    right = _Blob(
        center=(A * u(0.4, 0.58), B * u(-0.18, 0.08), u(28, 62)),
        radii=(u(50, 75), u(65, 92), u(62, 92)),
        rotation=_rotation(yaw=u(-0.2, 0.2), pitch=u(-0.15, 0.15)),
        power=u(2.0, 2.6),
    )
    left = _Blob(
        center=(-A * u(0.0, 0.15), B * u(0.3, 0.5), right.center[2] + u(10, 30)),
        radii=(u(35, 62), u(22, 40), u(28, 48)),
        rotation=_rotation(yaw=u(-0.3, 0.3), roll=u(-0.2, 0.2)),
    )
    liver_modes = _Blob.random_modes(rng, u(0.08, 0.14), n=8)
    lo = np.minimum(np.subtract(right.center, right.half_extent()),
                    np.subtract(left.center, left.half_extent()))
    hi = np.maximum(np.add(right.center, right.half_extent()),
                    np.add(left.center, left.half_extent()))
    lbox = grid.box((lo + hi) / 2, (hi - lo) / 2)
    liver = np.zeros(shape, dtype=bool)
    if all(s.stop > s.start for s in lbox):
        f_r, ux, uy, uz = right.field(grid, lbox)
        f_l = left.field(grid, lbox)[0]
        k = np.float32(0.12)  # smooth-min width
        f = -k * np.logaddexp(-f_r / k, -f_l / k)
        for kx, ky, kz, ph, amp in liver_modes:
            f = f - np.float32(amp) * np.cos(_phase(ux, uy, uz, kx, ky, kz, ph))
        liver[lbox] = f < 1.0
    # the liver stops short of the aorta and the spine (retrocrural space)
    prevertebral = ((X2 - x_s) / (rvx + 14)) ** 2 + ((Y2 - y_s) / (rvy + 2 * r_a + 8)) ** 2 < 1
    liver &= abdomen & ~prevertebral[:, :, None]
    paint(liver, T_LIVER, LABELS["liver"])
    # hepatic / portal veins: curves where two smooth fields both cross zero
    if all(s.stop > s.start for s in lbox):
        bshape = _box_shape(lbox)
        g1 = _smooth_noise(rng, bshape, grid.spacing, 40.0)
        g2 = _smooth_noise(rng, bshape, grid.spacing, 40.0)
        width = np.float32(u(0.2, 0.3))
        vessels = np.zeros(shape, dtype=bool)
        vessels[lbox] = (np.abs(g1) < width) & (np.abs(g2) < width)
        paint(vessels & liver, T_LIVER_VESSEL, LABELS["liver"])
    else:
        _smooth_noise(rng, (2, 2, 2), grid.spacing, 40.0)  # keep the draw order fixed
        _smooth_noise(rng, (2, 2, 2), grid.spacing, 40.0)
        u(0.2, 0.3)

    # ---- gallbladder under the liver ----------------------------------------------------
    gb = _Blob(
        center=(A * u(0.05, 0.3), B * u(0.1, 0.35), right.center[2] - u(25, 45)),
        radii=(u(12, 18), u(12, 18), u(25, 40)),
        rotation=_rotation(pitch=u(-0.5, 0.5), roll=u(-0.4, 0.4)),
        modes=_Blob.random_modes(rng, 0.05, n=3),
    )
    paint(gb.mask(grid) & abdomen, T_BILE, LABELS["gallbladder"])

    # ---- spleen: a crescent against the left posterolateral wall -----------------------
    th = np.deg2rad(u(200, 235))
    r_thick = u(18, 26)
    inward = u(0, 8) + r_thick
    sx_, sy_ = np.cos(th), np.sin(th)
    spleen = _Blob(
        center=(A * sx_ - inward * sx_, B * sy_ - inward * sy_, u(40, 70)),
        radii=(u(45, 58), r_thick, u(38, 55)),
        rotation=_rotation(yaw=th + np.pi / 2, roll=u(-0.3, 0.3)),
        bend=u(0.2, 0.45),
        modes=_Blob.random_modes(rng, u(0.05, 0.1)),
    )
    paint(spleen.mask(grid) & abdomen, T_SPLEEN, LABELS["spleen"])

    # ---- pancreas: a tapering tube from the head (right of the midline, anterior) across
    # the aorta to the tail at the splenic hilum (a quadratic Bezier curve)
    head = np.array([x_s + u(25, 45), y_s + rvy + u(30, 45), u(-15, 10)])
    neck = np.array([x_s - u(0, 10), y_s + rvy + 2 * r_a + u(12, 22), head[2] + u(5, 15)])
    tail = np.array([spleen.center[0] + u(15, 30), spleen.center[1] + u(0, 15),
                     head[2] + u(15, 35)])
    r_head, r_tail = u(12, 16), u(7, 10)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    curve = (1 - t) ** 2 * head + 2 * t * (1 - t) * neck + t**2 * tail  # (24, 3)
    radius = r_head + (r_tail - r_head) * t[:, 0]
    lo_p, hi_p = curve.min(axis=0) - r_head, curve.max(axis=0) + r_head
    pbox = grid.box((lo_p + hi_p) / 2, (hi_p - lo_p) / 2)
    if all(sl.stop > sl.start for sl in pbox):
        px, py, pz = X[pbox[0]], Y[:, pbox[1]], Z[:, :, pbox[2]]
        inside = np.zeros(_box_shape(pbox), dtype=bool)
        for (cx, cy, cz), r in zip(curve, radius):
            inside |= (px - cx) ** 2 + (py - cy) ** 2 + (pz - cz) ** 2 < r * r
        pancreas = np.zeros(shape, dtype=bool)
        pancreas[pbox] = inside
        paint(pancreas & abdomen, T_PANCREAS, LABELS["pancreas"])

    # ---- kidneys: cortex, medulla and sinus, either side of the spine -------------------
    z_right = u(-45, -20)
    for side, name in ((1, "kidney_right"), (-1, "kidney_left")):
        z_c = z_right if side == 1 else z_right + u(8, 25)
        kid = _Blob(
            center=(x_s + side * (rvx + u(28, 40)), y_s + u(-6, 6), z_c),
            radii=(u(22, 28), u(19, 24), u(45, 58)),
            rotation=_rotation(yaw=-side * np.deg2rad(u(20, 35)),
                               pitch=-side * np.deg2rad(u(8, 18))),
            modes=_Blob.random_modes(rng, 0.05, n=4),
        )
        sinus_off = u(0.5, 0.6)
        kbox = grid.box(kid.center, kid.half_extent())
        if not all(s.stop > s.start for s in kbox):
            continue
        f, ux, uy, uz = kid.field(grid, kbox)
        inside = f < 1.0
        cortex_edge = 1.0 - 6.0 / float(np.mean(kid.radii))
        sinus = ((ux + side * sinus_off) / 0.5) ** 2 + (uy / 0.45) ** 2 + (uz / 0.6) ** 2 < 1
        tissue = np.where(f > cortex_edge, T_CORTEX, np.where(sinus, T_SINUS, T_MEDULLA))
        k_mask = np.zeros(shape, dtype=bool)
        k_mask[kbox] = inside
        k_mask &= cavity
        k_tissue = np.zeros(shape, dtype=np.uint8)
        k_tissue[kbox] = tissue.astype(np.uint8)
        for t in (T_CORTEX, T_MEDULLA, T_SINUS):
            paint(k_mask & (k_tissue == t), t, LABELS[name])

    # ---- great vessels -----------------------------------------------------------------
    x_a = x_s - u(8, 16) + u(-0.03, 0.03) * Z
    y_a = y_s + rvy + r_a + u(1, 5)
    paint(((X - x_a) ** 2 + (Y - y_a) ** 2 < r_a**2) & cavity, T_ARTERY, LABELS["aorta"])
    vrx, vry = u(11, 15), u(8, 11)
    x_v, y_v = x_s + u(18, 28), y_s + rvy + u(6, 14)
    ivc = (((X - x_v) / vrx) ** 2 + ((Y - y_v) / vry) ** 2 < 1) & abdomen
    paint(ivc, T_VEIN, LABELS["inferior_vena_cava"])

    # ---- spine: vertebral bodies (by level), discs, canal, posterior elements ----------
    rel = (Z - z_disc0) / period  # (1, 1, K)
    level = np.floor(rel).astype(int)
    in_disc = np.abs(rel - np.round(rel)) * period < disc_half
    vb = ((X2 - x_s) / rvx) ** 2 + ((Y2 - y_s) / rvy) ** 2 < 1
    vb_inner = ((X2 - x_s) / (rvx - 3)) ** 2 + ((Y2 - y_s) / (rvy - 3)) ** 2 < 1
    r_c = u(7, 9)
    y_c = y_s - rvy - r_c - 1
    d_c = np.sqrt((X2 - x_s) ** 2 + (Y2 - y_c) ** 2)
    canal = d_c < r_c
    arch = (d_c < r_c + 5) & ~canal
    spinous = (np.abs(X2 - x_s) < 4) & (Y2 < y_c - r_c) & (Y2 > y_back + 6)
    transverse = (np.abs(Y2 - y_c - 2) < 4) & (np.abs(X2 - x_s) < rvx + 15) & ~canal & ~vb
    posterior = arch | spinous | transverse
    for lev in np.unique(level):
        value = int(np.clip(LABELS["vertebrae_L1"] + lev, LABELS["vertebrae_S1"],
                            LABELS["vertebrae_T1"]))
        zsel = (level == lev) & ~in_disc  # (1, 1, K)
        m_vb = vb[:, :, None] & zsel
        paint(m_vb, T_CORTICAL, value)
        paint(vb_inner[:, :, None] & zsel, T_CANCELLOUS, value)
        paint(posterior[:, :, None] & zsel, T_CORTICAL, value)
    paint(vb[:, :, None] & in_disc, T_DISC)
    paint(canal, T_CSF)

    # ---- ribs in the wall band of the upper abdomen ------------------------------------
    band = fat_inner & ~cavity2
    psi = np.abs(np.angle(np.exp(1j * (theta + np.pi / 2))))  # 0 posterior .. pi anterior
    rib_period, rib_width, rib_phase = u(24, 30), u(7, 10), u(0, 30)
    rib_drop, z_rib_min = u(120, 170), u(-30, -10)  # ribs run down ~15 cm toward the front
    phase = np.mod(Z + rib_drop * psi[:, :, None] / np.pi - rib_phase, rib_period)
    ribs = (band & (psi > 0.35) & (psi < 2.5))[:, :, None] & (phase < rib_width) & (Z > z_rib_min)
    paint(ribs, T_RIB)

    # ---- a fat plane (one voxel in-plane) between the solid organs and unlabelled bowel
    solid = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas")
    organs = np.isin(paint.labels, [LABELS[n] for n in solid])
    in_plane = ndimage.generate_binary_structure(2, 1)[:, :, None]
    near = ndimage.binary_dilation(organs, structure=in_plane)
    bowel_like = np.isin(paint.tissue, [T_BOWEL_GAS, T_BOWEL_FLUID, T_BOWEL_WALL,
                                        T_BOWEL_CONTRAST])
    paint(near & ~organs & bowel_like & (paint.labels == 0), T_FAT)

    # ---- liver lesions (1-3 hypodense spheres, wholly inside the liver) ---------------
    lesions = np.zeros(shape, dtype=bool)
    liver_now = paint.labels == LABELS["liver"]
    n_lesions = int(rng.integers(1, 4))
    radii = [u(6, 16) for _ in range(n_lesions)]
    picks = rng.random(n_lesions)
    if liver_now.any():
        idx = np.argwhere(liver_now)
        lo_i, hi_i = idx.min(axis=0), idx.max(axis=0) + 1
        sub = tuple(slice(int(lo_), int(hi_)) for lo_, hi_ in zip(lo_i, hi_i))
        depth = ndimage.distance_transform_edt(
            np.pad(liver_now[sub], 1), sampling=grid.spacing)[1:-1, 1:-1, 1:-1]
        gx, gy, gz = (ax.ravel()[s] for ax, s in zip((X, Y, Z), sub))
        for r, pick in zip(radii, picks):
            ok = np.argwhere(depth > r + 3.0)
            if len(ok) == 0:
                ok = np.argwhere(depth >= depth.max())
                r = max(float(depth.max()) - 1.0, 3.0)
            ci, cj, ck = ok[int(pick * len(ok))]
            sphere = ((gx[:, None, None] - gx[ci]) ** 2 + (gy[None, :, None] - gy[cj]) ** 2
                      + (gz[None, None, :] - gz[ck]) ** 2) < r * r
            lesions[sub] |= sphere
        lesions &= liver_now
        paint.tissue[lesions] = T_LESION
    return paint.tissue, paint.labels, lesions


# --------------------------------------------------------------------------------------------
# appearance: tissue map -> CT (HU) or MR image
# --------------------------------------------------------------------------------------------

def _appearance(
    rng: np.random.Generator, tissue: np.ndarray, grid: _Grid, modality: str,
    sequence: str | None,
) -> np.ndarray:
    shape, spacing = tissue.shape, grid.spacing
    u = rng.uniform
    n = len(_TISSUE_TABLE)
    values, fine, coarse = (np.zeros(n, dtype=np.float32) for _ in range(3))
    if modality == "CT":
        for t, (_, (lo, hi), _, _, (sd_fine, sd_coarse)) in enumerate(_TISSUE_TABLE):
            values[t] = u(lo, hi)
            fine[t], coarse[t] = sd_fine, sd_coarse
        values[T_LIVER_VESSEL] = values[T_LIVER] + u(25, 50)
        values[T_LESION] = values[T_LIVER] - u(35, 70)
        values[T_MEDULLA] = values[T_CORTEX] - u(0, 30)
        noise_sd = u(10, 20)
    else:
        column = 2 if sequence == "T1" else 3
        gain = u(0.6, 1.6)
        for t, row in enumerate(_TISSUE_TABLE):
            values[t] = row[column] * gain * u(0.8, 1.2)
        # the liver-spleen contrast that tells the sequences apart stays within its usual range
        if sequence == "T1":
            values[T_SPLEEN] = values[T_LIVER] / u(1.2, 1.45)
        else:
            values[T_SPLEEN] = values[T_LIVER] * u(1.6, 2.1)
        fine, coarse = 0.04 * values, 0.02 * values
        for t, (f_fine, f_coarse) in _TEXTURE_MR.items():
            fine[t], coarse[t] = f_fine * values[t], f_coarse * values[t]
        noise_sd = u(0.03, 0.06) * 300 * gain

    img = values[tissue]
    img += fine[tissue] * _smooth_noise(rng, shape, spacing, 8.0)
    img += coarse[tissue] * _smooth_noise(rng, shape, spacing, 20.0)
    # partial volume: each voxel averages over its own extent (a box, sd 0.29 voxel) seen
    # through a point spread function of about 1 mm
    sigma = [float(np.hypot(0.29, 1.0 / s)) for s in spacing]
    img = ndimage.gaussian_filter(img, sigma, mode="nearest")

    if modality == "MR":
        # smooth multiplicative bias field (coil sensitivity), within x0.70 .. x1.42
        xn = (grid.X / max(abs(grid.X).max(), 1.0)).astype(np.float32)
        yn = (grid.Y / max(abs(grid.Y).max(), 1.0)).astype(np.float32)
        zn = (grid.Z / max(abs(grid.Z).max(), 1.0)).astype(np.float32)
        c = rng.normal(0.0, 1.0, size=6) * np.array([0.08, 0.15, 0.08, 0.08, 0.12, 0.06])
        log_bias = c[0] * xn + c[1] * yn + c[2] * zn + c[3] * xn * yn + c[4] * yn * yn \
            + c[5] * xn * xn
        img *= np.exp(np.clip(log_bias, -0.35, 0.35)).astype(np.float32)
        # magnitude (Rician) noise: |signal + n1 + i n2|
        n1 = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sd)
        n2 = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sd)
        img = np.sqrt((img + n1) ** 2 + n2**2)
        img = np.clip(np.rint(img), 0, 4095)
    else:
        # CT noise is correlated in-plane (reconstruction kernel)
        n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0.6, 0.6, 0))
        n *= np.float32(noise_sd / max(float(n.std()), 1e-6))
        img = np.clip(np.rint(img + n), -1024, 3071)
    return img.astype(np.float32)


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
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}")
    if modality == "CT" and sequence is not None:
        raise ValueError(f"sequence is for MR only, got {sequence!r} with modality 'CT'")
    if modality == "MR":
        sequence = sequence or "T2SPIR"
        if sequence not in _MR_SEQUENCES:
            raise ValueError(f"sequence must be one of {_MR_SEQUENCES}, got {sequence!r}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3 ints >= 4, got {shape!r}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive mm values, got {spacing!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")

    anat = np.random.default_rng([seed, 0])
    # geometry: field of view centred on the isocentre in x, y; table position in z
    table_z = float(np.round(anat.uniform(-700, -300) * 2) / 2)
    origin = np.array(
        [-(shape[0] - 1) / 2 * spacing[0], -(shape[1] - 1) / 2 * spacing[1], table_z])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    # the patient lies off-centre; the scan range covers the anatomy with a random shift
    body_x, body_y = anat.uniform(-25, 25), anat.uniform(-18, 18)
    z_shift = 15.0 + anat.uniform(-35, 35)
    x = origin[0] + spacing[0] * np.arange(shape[0]) - body_x
    y = origin[1] + spacing[1] * np.arange(shape[1]) - body_y
    z = spacing[2] * (np.arange(shape[2]) - (shape[2] - 1) / 2) + z_shift
    grid = _Grid(x[:, None, None], y[None, :, None], z[None, None, :], spacing)
    tissue, labels, lesions = _anatomy(anat, grid)

    stream = 1 if modality == "CT" else 2 + _MR_SEQUENCES.index(sequence)
    look = np.random.default_rng([seed, stream])
    image = _appearance(look, tissue, grid, modality, sequence)
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


# --------------------------------------------------------------------------------------------
# baselines: what a predictor that learns nothing scores
# --------------------------------------------------------------------------------------------

def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Volume Dice 2TP / (2TP + FP + FN) (Eq. 9); 1.0 when both are empty."""
    tp = int(np.count_nonzero(pred & truth))
    den = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return 1.0 if den == 0 else 2.0 * tp / den


def _threshold_intensity(p: Phantom) -> np.ndarray:
    """CT: HU as is; MR: divided by the volume's 99th percentile (arbitrary units)."""
    if p.modality == "CT":
        return p.image
    return p.image / max(float(np.percentile(p.image, 99)), 1.0)


def _best_level(mean_mask: np.ndarray) -> float:
    """The threshold on the train cases' mean mask with the best pooled Dice on those cases.

    Over n train cases, "mean_mask >= level" has TP = n * (sum of mean_mask where it is
    >= level), |pred| = n * (voxels where it is >= level), |truth| = n * (sum of mean_mask).
    """
    flat = np.sort(mean_mask[mean_mask > 0])
    if not flat.size:
        return 0.5
    levels = np.unique(flat)
    first = np.searchsorted(flat, levels, side="left")
    tail_sum = np.concatenate([np.cumsum(flat[::-1])[::-1], [0.0]])[first]
    dice = 2 * tail_sum / ((flat.size - first) + flat.sum())
    return float(levels[int(np.argmax(dice))])


def _best_window(train: Sequence[Phantom], values: tuple[int, ...]) -> tuple[float, float]:
    """The window ``[lo, hi)`` with the best pooled Dice on ``train``, both ends searched over
    81 quantiles of the organ's intensities (via cumulative histograms: every pair at once)."""
    organ_vals = np.concatenate(
        [_threshold_intensity(p)[np.isin(p.labels, values)] for p in train])
    edges = np.unique(np.quantile(organ_vals, np.linspace(0.0, 1.0, 81)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    h_org = np.zeros(len(edges) - 1)
    h_all = np.zeros(len(edges) - 1)
    for p in train:
        img = _threshold_intensity(p)
        h_all += np.histogram(img, bins=edges)[0]
        h_org += np.histogram(img[np.isin(p.labels, values)], bins=edges)[0]
    c_org = np.concatenate([[0.0], np.cumsum(h_org)])
    c_all = np.concatenate([[0.0], np.cumsum(h_all)])
    tp = c_org[None, :] - c_org[:, None]  # [a, b]: window [edges[a], edges[b])
    pred = c_all[None, :] - c_all[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(pred > 0, 2 * tp / (pred + organ_vals.size), 0.0)
    dice[np.tril_indices_from(dice)] = -1.0
    a, b = np.unravel_index(int(np.argmax(dice)), dice.shape)
    return float(edges[a]), float(edges[b])


def trivial_predictor_dice(
    train: Sequence[Phantom], test: Sequence[Phantom], organ: str
) -> dict[str, float]:
    """Mean volume Dice on ``test`` of three predictors that learn nothing about shape.

    - ``all_background``: predicts no organ anywhere (0.0 on every case with the organ).
    - ``fixed_blob``: the organ's mean mask over ``train`` thresholded at 0.5, a predictor that
      ignores the image (same voxel grid required); ``fixed_blob_tuned``: the same with the
      threshold (``blob_level``) that scores best on ``train``.
    - ``intensity_window``: the intensity window ``[lo, hi)`` with the best pooled Dice on
      ``train`` (searched over the organ's intensity quantiles; MR scaled per volume by its
      99th percentile), applied to every voxel of each test case.

    Returns:
        ``{"all_background", "fixed_blob", "fixed_blob_tuned", "intensity_window": mean
        Dice, "blob_level", "window_lo", "window_hi": the chosen parameters}``.
    """
    if organ not in ORGAN_LABELS:
        raise ValueError(f"organ must be one of {sorted(ORGAN_LABELS)}, got {organ!r}")
    if not train or not test:
        raise ValueError("train and test must both hold at least one phantom")
    shapes = {p.shape for p in (*train, *test)}
    if len(shapes) != 1:
        raise ValueError(f"all phantoms must share one voxel grid, got shapes {sorted(shapes)}")
    values = ORGAN_LABELS[organ]
    truth = [np.isin(p.labels, values) for p in test]
    background = float(np.mean([_dice(np.zeros_like(t), t) for t in truth]))

    mean_mask = np.mean([np.isin(p.labels, values) for p in train], axis=0)
    fixed = float(np.mean([_dice(mean_mask >= 0.5, t) for t in truth]))
    best = _best_level(mean_mask)
    fixed_tuned = float(np.mean([_dice(mean_mask >= best, t) for t in truth]))

    lo, hi = _best_window(train, values)
    window = float(np.mean([
        _dice((img >= lo) & (img < hi), t)
        for img, t in zip((_threshold_intensity(p) for p in test), truth)
    ]))
    return {
        "all_background": background,
        "fixed_blob": fixed,
        "fixed_blob_tuned": fixed_tuned,
        "blob_level": best,
        "intensity_window": window,
        "window_lo": lo,
        "window_hi": hi,
    }


# --------------------------------------------------------------------------------------------
# file writing helpers
# --------------------------------------------------------------------------------------------

def _temp_name(name: str) -> str:
    return f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`anunet_core.atomic.write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


class _AtomicDir:
    """Fill a temporary folder beside ``path``; on success replace ``path`` with it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(_temp_name(self.path.name))

    def __enter__(self) -> Path:
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, compress: bool) -> bytes:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    data = img.to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def _image_array(p: Phantom) -> np.ndarray:
    """The image as int16 (exact: phantom values are whole numbers within int16)."""
    return p.image.astype(np.int16)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    name = Path(path).name
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path must end with .nii or .nii.gz, got {name!r}")
    return _atomic_write_bytes(path, _nifti_bytes(array, affine, name.endswith(".gz")))


def write_nifti_pairs(out_dir: str | os.PathLike, phantoms: Sequence[Phantom]) -> list[Path]:
    """``OUT/<case_id>/image.nii.gz`` (int16) + ``labels.nii.gz`` (uint8, all label values).

    Returns the case folders.
    """
    out = Path(out_dir)
    cases = []
    for p in phantoms:
        case = out / p.case_id
        _save_nifti(case / "image.nii.gz", _image_array(p), p.affine)
        _save_nifti(case / "labels.nii.gz", p.labels, p.affine)
        cases.append(case)
    return cases


def write_msd(out_dir: str | os.PathLike, phantoms: Sequence[Phantom], organ: str) -> list[Path]:
    """Medical Segmentation Decathlon layout for one organ.

    ``OUT/imagesTr/<case_id>.nii.gz`` (int16), ``OUT/labelsTr/<case_id>.nii.gz`` (uint8:
    ``organ`` = 1, everything else 0; kidney = both kidneys) and ``OUT/dataset.json``, which
    lists every image in ``imagesTr`` (so cases added by later calls are listed too).
    Returns the image paths of this call.
    """
    if organ not in ORGAN_LABELS:
        raise ValueError(f"organ must be one of {sorted(ORGAN_LABELS)}, got {organ!r}")
    out = Path(out_dir)
    images = []
    for p in phantoms:
        img = out / "imagesTr" / f"{p.case_id}.nii.gz"
        lab = out / "labelsTr" / f"{p.case_id}.nii.gz"
        _save_nifti(img, _image_array(p), p.affine)
        _save_nifti(lab, np.isin(p.labels, ORGAN_LABELS[organ]).astype(np.uint8), p.affine)
        images.append(img)
    names = sorted(f.name for f in (out / "imagesTr").glob("*.nii.gz"))
    modalities = sorted({p.modality for p in phantoms}) or ["CT"]
    meta = {
        "name": f"Synthetic{organ.capitalize()}",
        "description": f"anunet_core.synthetic phantoms, {organ} labels",
        "reference": "synthetic",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "/".join(modalities)},
        "labels": {"0": "background", "1": organ},
        "numTraining": len(names),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names],
        "test": [],
    }
    _atomic_write_bytes(out / "dataset.json", json.dumps(meta, indent=2).encode())
    return images


def write_lits(
    out_dir: str | os.PathLike, phantoms: Sequence[Phantom], *, first_index: int = 0
) -> list[Path]:
    """LiTS layout: ``OUT/volume-N.nii`` (int16) + ``OUT/segmentation-N.nii`` (uint8).

    ``N`` = ``first_index`` + the phantom's position in ``phantoms`` (LiTS counts from 0).
    Segmentation: liver 1, lesion 2, else 0. Returns the volume paths.
    """
    out = Path(out_dir)
    volumes = []
    for n, p in enumerate(phantoms, start=int(first_index)):
        seg = np.zeros(p.labels.shape, dtype=np.uint8)
        seg[p.labels == LABELS["liver"]] = 1
        seg[p.lesions] = 2
        vol = _save_nifti(out / f"volume-{n}.nii", _image_array(p), p.affine)
        _save_nifti(out / f"segmentation-{n}.nii", seg, p.affine)
        volumes.append(vol)
    return volumes


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------

def _dicom_grid(affine: np.ndarray, shape: Sequence[int], standard_orientation: bool):
    """Flips and the affine of the grid the DICOM slices are stored on.

    Returns ``(flip_i, flip_j, grid_affine)``: the stored grid is the phantom's grid with axis
    i (and j) reversed where flagged; ``grid_affine`` maps its voxels to RAS mm.
    """
    flip_i = flip_j = False
    if standard_orientation:  # columns toward +x LPS (patient left), rows toward +y (posterior)
        col0, col1 = _LPS @ affine[:3, 0], _LPS @ affine[:3, 1]
        flip_i = bool(col0[np.argmax(np.abs(col0))] < 0)
        flip_j = bool(col1[np.argmax(np.abs(col1))] < 0)
    grid = affine.astype(np.float64).copy()
    if flip_i:
        grid[:3, 3] += (shape[0] - 1) * grid[:3, 0]
        grid[:3, 0] *= -1
    if flip_j:
        grid[:3, 3] += (shape[1] - 1) * grid[:3, 1]
        grid[:3, 1] *= -1
    return flip_i, flip_j, grid


def _pixel_layout(volume: np.ndarray, flip_i: bool, flip_j: bool) -> np.ndarray:
    """``(I, J, K)`` -> ``(K, rows=J, cols=I)``: pixel ``(r, c)`` of slice k = ``volume[c, r, k]``
    of the (possibly flipped) grid."""
    v = volume[::-1] if flip_i else volume
    v = v[:, ::-1] if flip_j else v
    return np.ascontiguousarray(np.transpose(v, (2, 1, 0)))


def _ds(v: float) -> str:
    return format_number_as_ds(float(v) + 0.0)  # + 0.0: no "-0.0"


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["anunet-synthetic", *[str(p) for p in parts]])


def _dicom_datasets(p: Phantom, standard_orientation: bool) -> list[Dataset]:
    """One dataset per slice, in k order (k = 0 most inferior)."""
    flip_i, flip_j, grid = _dicom_grid(p.affine, p.shape, standard_orientation)
    pixels = _pixel_layout(p.image, flip_i, flip_j)
    row_vec, col_vec = _LPS @ grid[:3, 0], _LPS @ grid[:3, 1]
    col_spacing, row_spacing = np.linalg.norm(row_vec), np.linalg.norm(col_vec)
    iop = [*(row_vec / col_spacing), *(col_vec / row_spacing)]
    slice_spacing = float(np.linalg.norm(grid[:3, 2]))

    ct = p.modality == "CT"
    stored = pixels.astype(np.int32) + (1024 if ct else 0)  # CT: RescaleIntercept -1024
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(f"{p.case_id}: pixel values out of the uint16 range")
    stored = stored.astype("<u2")
    key = (p.case_id, p.seed, p.modality, p.sequence)
    study, series, frame = _uid(*key, "study"), _uid(*key, "series"), _uid(*key, "frame")
    patient = f"SYNTH-{p.case_id}"
    n_slices = p.shape[2]
    out = []
    for k in range(n_slices):
        ipp = _LPS @ (grid @ np.array([0.0, 0.0, k, 1.0]))[:3]
        sop = _uid(*key, "slice", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE if ct else MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = p.modality
        ds.Manufacturer = "anunet synthetic phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "synthetic abdomen"
        ds.SeriesDescription = f"synthetic {p.modality} {p.sequence or 'portal venous'}"
        ds.PatientName = patient
        ds.PatientID = patient
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = _ds(slice_spacing)
        ds.PatientPosition = "HFS"
        if ct:
            ds.KVP = "120"
        else:
            t2 = p.sequence == "T2SPIR"
            ds.ScanningSequence = "SE" if t2 else "GR"
            ds.SequenceVariant = "SK" if t2 else "SP"
            ds.ScanOptions = "FS" if t2 else ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime = "1600" if t2 else "150"
            ds.EchoTime = "80" if t2 else "4.6"
            ds.EchoTrainLength = "16" if t2 else "1"
            ds.MagneticFieldStrength = "1.5"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = n_slices - k  # head first: instance 1 is the most superior slice
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(ipp[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        ds.PixelSpacing = [_ds(row_spacing), _ds(col_spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        if ct:
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
        ds.PixelData = stored[k].tobytes()
        out.append(ds)
    return out


def _dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_dicom_series(
    series_dir: str | os.PathLike,
    phantom: Phantom,
    *,
    names: str = "uid",
    standard_orientation: bool = False,
) -> list[Path]:
    """Write ``phantom.image`` as one DICOM series (one file per axial slice) in ``series_dir``.

    Valid Part 10 files (explicit VR little endian, CT or MR Image Storage), UIDs derived
    from the case id, seed, modality and sequence (the same phantom always gets the same UIDs),
    PatientName = PatientID = ``"SYNTH-<case_id>"``. Pixels are unsigned 16 bit: CT stores
    ``HU + 1024`` with RescaleIntercept -1024 and RescaleSlope 1; MR stores the value itself
    (no rescale tags). InstanceNumber 1 is the most superior slice.

    Geometry (DICOM patient space is LPS = diag(-1, -1, 1) RAS): pixel ``(r, c)`` of the slice
    at k holds ``image[c, r, k]``; ImageOrientationPatient = the LPS directions of the affine's
    columns 0 and 1; ImagePositionPatient of slice k = LPS of ``affine @ (0, 0, k, 1)``;
    PixelSpacing = ``[spacing_j, spacing_i]``. So a reader that sorts by position along the
    slice normal gets back the phantom's array and affine.

    Args:
        series_dir: the folder to create (replaced as a whole if it exists).
        names: ``"uid"``: ``<SOPInstanceUID>.dcm``, written in a shuffled order (name order
            says nothing about slice order); ``"chaos"``: ``IMG-0001-00001.dcm`` ... numbered by
            InstanceNumber (name order = superior to inferior). Default ``"uid"``.
        standard_orientation: ``True``: store slices as scanners do (ImageOrientationPatient
            ``1,0,0,0,1,0`` for this affine: columns toward the patient's left, rows toward
            posterior), i.e. the phantom's grid reversed in i and j, the same world positions.
            Default ``False`` (the stored grid is the phantom's grid).

    Returns:
        the written files, in slice order k = 0 .. K-1.
    """
    if names not in ("uid", "chaos"):
        raise ValueError(f"names must be 'uid' or 'chaos', got {names!r}")
    datasets = _dicom_datasets(phantom, standard_orientation)
    order = np.random.default_rng([phantom.seed, 7]).permutation(len(datasets))
    target = Path(series_dir)
    files: dict[int, Path] = {}
    with _AtomicDir(target) as tmp:
        for k in (order if names == "uid" else range(len(datasets))):
            ds = datasets[int(k)]
            if names == "uid":
                name = f"{ds.SOPInstanceUID}.dcm"
            else:
                name = f"IMG-0001-{int(ds.InstanceNumber):05d}.dcm"
            (tmp / name).write_bytes(_dicom_bytes(ds))
            files[int(k)] = target / name
    return [files[k] for k in range(len(datasets))]


def write_dicom_archive(
    out_dir: str | os.PathLike, phantoms: Sequence[Phantom], *, standard_orientation: bool = False
) -> list[Path]:
    """``OUT/<case_id>/dicom/*.dcm`` (:func:`write_dicom_series`) + ``labels.nii.gz`` beside.

    The labels stay on the phantom's grid and affine (like TotalSegmentator's output beside a
    DICOM series): with ``standard_orientation=True`` they line up with the DICOM only through
    their geometry. Returns the case folders.
    """
    out = Path(out_dir)
    cases = []
    for p in phantoms:
        case = out / p.case_id
        write_dicom_series(case / "dicom", p, standard_orientation=standard_orientation)
        _save_nifti(case / "labels.nii.gz", p.labels, p.affine)
        cases.append(case)
    return cases


# --------------------------------------------------------------------------------------------
# PNG (8-bit greyscale) and the CHAOS layout
# --------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_gray(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a 2D uint8 array as an 8-bit greyscale PNG (row 0 at the top); atomic."""
    a = np.asarray(array)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"expected a 2D uint8 array, got {a.ndim}D {a.dtype}")
    h, w = a.shape
    raw = np.hstack([np.zeros((h, 1), dtype=np.uint8), a]).tobytes()  # filter 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    data = (_PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))
    return _atomic_write_bytes(Path(path), data)


def read_png_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit greyscale, non-interlaced PNG (any filter types) into a 2D uint8 array."""
    data = Path(path).read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    w, h, depth, color, _, _, interlace = header
    if depth != 8 or color != 0 or interlace != 0:
        raise ValueError(
            f"{path}: only 8-bit greyscale non-interlaced PNGs are supported "
            f"(bit depth {depth}, colour type {color}, interlace {interlace})")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, w + 1)
    out = np.zeros((h, w), dtype=np.uint8)
    prev = np.zeros(w, dtype=np.int32)
    for r in range(h):
        kind, line = raw[r, 0], raw[r, 1:].astype(np.int32)
        if kind == 0:  # None
            cur = line
        elif kind == 1:  # Sub: a running sum along the row, modulo 256
            cur = np.cumsum(line) & 0xFF
        elif kind == 2:  # Up
            cur = (line + prev) & 0xFF
        elif kind in (3, 4):  # Average, Paeth: sequential along the row
            up_row, row = prev.tolist(), line.tolist()
            done: list[int] = []
            left = up_left = 0
            for c in range(w):
                up = up_row[c]
                if kind == 3:
                    pred = (left + up) // 2
                else:
                    pa, pb = abs(up - up_left), abs(left - up_left)
                    pc = abs(left + up - 2 * up_left)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                left, up_left = (row[c] + pred) & 0xFF, up
                done.append(left)
            cur = np.array(done, dtype=np.int32)
        else:
            raise ValueError(f"{path}: unknown PNG filter type {kind}")
        out[r] = cur
        prev = cur
    return out


def write_chaos_mr(
    out_dir: str | os.PathLike,
    phantoms: Sequence[Phantom],
    *,
    first_index: int = 0,
    standard_orientation: bool = False,
) -> list[Path]:
    """CHAOS MR layout: ``OUT/MR/<n>/T2SPIR/DICOM_anon/IMG-0001-00001.dcm ...`` and
    ``OUT/MR/<n>/T2SPIR/Ground/IMG-0001-00001.png ...``.

    ``n`` = ``first_index`` + position in ``phantoms`` + 1 (CHAOS counts from 1). One PNG per
    DICOM slice with the same name stem, so sorted file names pair them (as CHAOS does); names
    run from the most superior slice down. PNG pixel ``(row, col)`` = the DICOM slice's
    ``pixel_array[row, col]``; grey values :data:`CHAOS_CODES` (liver 63, right kidney 126,
    left kidney 189, spleen 252).
    Returns the case folders ``OUT/MR/<n>``.
    """
    out = Path(out_dir)
    lut = np.zeros(256, dtype=np.uint8)
    for value, code in CHAOS_CODES.items():
        lut[value] = code
    cases = []
    for n, p in enumerate(phantoms, start=int(first_index) + 1):
        if p.modality != "MR":
            raise ValueError(f"CHAOS MR layout needs MR phantoms, {p.case_id} is {p.modality}")
        base = out / "MR" / str(n) / "T2SPIR"
        files = write_dicom_series(base / "DICOM_anon", p, names="chaos",
                                   standard_orientation=standard_orientation)
        flip_i, flip_j, _ = _dicom_grid(p.affine, p.shape, standard_orientation)
        ground = _pixel_layout(lut[p.labels], flip_i, flip_j)  # (K, rows, cols)
        with _AtomicDir(base / "Ground") as tmp:
            for k, f in enumerate(files):
                write_png_gray(tmp / (Path(f).stem + ".png"), ground[k])
        cases.append(out / "MR" / str(n))
    return cases


# --------------------------------------------------------------------------------------------
# the entry point of jobs/make_synthetic.py
# --------------------------------------------------------------------------------------------

_LAYOUTS = {"nifti": ("pairs", "msd", "lits"), "dicom": ("dicom", "chaos")}


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of an archive made with ``seed``: ``seed * 100003 + index``."""
    return int(seed) * 100003 + int(index)


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
        shape, spacing: see :func:`make_phantom`.
        organ: the organ labelled in the ``"msd"`` layout. Default ``"liver"``.
        sequence: MR sequence (see :func:`make_phantom`); default ``"T2SPIR"``.
        standard_orientation: DICOM layouts: see :func:`write_dicom_series`. Default ``False``.

    Returns:
        what the layout's writer returns: case folders (pairs, dicom, chaos), image files
        (msd) or volume files (lits).
    """
    if fmt not in _LAYOUTS:
        raise ValueError(f"fmt must be 'nifti' or 'dicom', got {fmt!r}")
    layout = layout or _LAYOUTS[fmt][0]
    if layout not in _LAYOUTS[fmt]:
        raise ValueError(f"layout for fmt {fmt!r} must be one of {_LAYOUTS[fmt]}, got {layout!r}")
    if layout == "chaos" and modality != "MR":
        raise ValueError(f"the CHAOS layout holds MR scans, got modality {modality!r}")
    if layout == "msd" and organ not in ORGAN_LABELS:
        raise ValueError(f"organ must be one of {sorted(ORGAN_LABELS)}, got {organ!r}")
    if int(cases) < 1:
        raise ValueError(f"cases must be >= 1, got {cases!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i in range(int(cases)):  # one phantom in memory at a time
        p = make_phantom(case_seed(seed, i), modality, shape, spacing, sequence=sequence,
                         case_id=f"case_{i:04d}")
        if layout == "pairs":
            written += write_nifti_pairs(out, [p])
        elif layout == "msd":
            written += write_msd(out, [p], organ)
        elif layout == "lits":
            written += write_lits(out, [p], first_index=i)
        elif layout == "dicom":
            written += write_dicom_archive(out, [p], standard_orientation=standard_orientation)
        else:
            written += write_chaos_mr(out, [p], first_index=i,
                                      standard_orientation=standard_orientation)
    return written
