"""The scan type every reader returns: :class:`Volume`, and the errors of reading one.

Conventions (one rule each, used by every reader of :mod:`anunet_core.io`):

- Voxel axes: ``array[i, j, k]`` in nibabel's order. For NIfTI that is the file's own order;
  for a DICOM series see :mod:`anunet_core.io.dicom`.
- World space: ``affine`` (4x4, float64) maps a voxel index ``(i, j, k, 1)`` to RAS+
  coordinates in millimetres (the NIfTI convention: +x right, +y anterior, +z superior).
- Units: CT intensities in Hounsfield units; MR in the scanner's arbitrary units. Images are
  float32; label volumes are integers (uint8, or int16 when needed).
- Errors: anything that cannot be read raises :class:`VolumeReadError` (a ``ValueError``) with
  one line naming the file (or folder) and the reason; a label volume that does not line up
  with its image raises :class:`LabelMismatchError` (a ``ValueError``).
- Size: every reader takes ``max_voxels`` (default :data:`DEFAULT_MAX_VOXELS`, None for no
  cap) and checks it on the header alone, before any pixel array is allocated
  (:func:`check_voxel_count`): a larger grid raises :class:`VolumeTooLarge`. This is also the
  defence against decompression bombs (a small ``.nii.gz`` whose header claims a huge grid).
- ``case_id`` is the file name (without ``.nii``/``.nii.gz``) or the DICOM folder's name,
  never anything from the patient's name, ID or birth date.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from anunet_core.vocabulary import validate_modality

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "LabelMismatchError",
    "Volume",
    "VolumeReadError",
    "VolumeTooLarge",
    "check_max_voxels",
    "check_voxel_count",
    "fmt_shape",
    "fmt_vec",
    "spacing_mm",
    "voxel_volume_ml",
]

DEFAULT_MAX_VOXELS: int = 2**29
"""The largest scan read by default, in voxels: 512 x 512 x 2048 (2 GiB as float32)."""


class VolumeReadError(ValueError):
    """A scan could not be read; the message is one line naming the file and the reason."""


class VolumeTooLarge(VolumeReadError):
    """A scan's header claims more voxels than the cap (``max_voxels``); nothing was allocated.

    The message is ``"{path}: too large ({n} voxels, above the cap of {cap}; raise
    --max-voxels)"``.
    """


def check_max_voxels(max_voxels: int | None) -> int | None:
    """``max_voxels`` checked: a positive int, or None (no cap); else ``ValueError``."""
    if max_voxels is None:
        return None
    if isinstance(max_voxels, bool) or not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1:
        raise ValueError(f"max_voxels must be a positive integer or None, got {max_voxels!r}")
    return int(max_voxels)


def check_voxel_count(path, shape, max_voxels: int | None) -> int:
    """The number of voxels of a grid of ``shape`` (every axis, e.g. a 4-D header's too).

    Raises :class:`VolumeTooLarge` naming ``path`` when it is above ``max_voxels`` (None: no
    cap). Computed in Python integers, so a forged header cannot overflow it. Call it with the
    header's shape before any pixel array is allocated.
    """
    cap = check_max_voxels(max_voxels)
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    if cap is not None and n > cap:
        raise VolumeTooLarge(f"{path}: too large ({n} voxels, above the cap of {cap}; raise --max-voxels)")
    return n


class LabelMismatchError(ValueError):
    """A label volume's voxel grid does not line up with its image's (one-line reason)."""


def fmt_shape(shape) -> str:
    """``(512, 512, 90)`` -> ``"512x512x90"``."""
    return "x".join(str(int(s)) for s in shape)


def fmt_vec(values, digits: int = 4) -> str:
    """A short ``(a, b, c)`` for messages."""
    return "(" + ", ".join(f"{float(v):.{digits}g}" for v in values) + ")"


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3-D scan in its own voxel grid.

    Attributes:
        array: 3-D ``np.ndarray``, voxel axes ``(i, j, k)`` in nibabel's order (see the module
            docstring for DICOM). Images are float32: Hounsfield units for CT (rescale
            applied), scanner units for MR.
        affine: ``(4, 4)`` float64, voxel index -> RAS+ world coordinates in mm (NIfTI
            convention).
        modality: ``"CT"`` or ``"MR"``.
        case_id: the file or folder name (never patient-identifying header fields).
        dicom_headers: for a scan read from a DICOM series only (set by
            :func:`~anunet_core.io.dicom.read_dicom_series`), the source slices' pydicom
            datasets in ``k`` order, one per slice, ``PixelData`` removed: what a DICOM SEG needs
            to reference the series (:mod:`anunet_core.io.dicom_seg`). They hold the patient's
            identifying fields: never log them. None otherwise (default); not in the repr.

    ``spacing`` is the voxel size in mm per array axis (the norms of the affine's columns).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str
    case_id: str
    dicom_headers: tuple | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D, got shape {array.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {affine.shape}")
        if not np.all(np.isfinite(affine)):
            raise ValueError("Volume.affine has non-finite values")
        if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"Volume.affine last row must be (0, 0, 0, 1), got {affine[3]}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("Volume.affine is singular (a zero voxel size?)")
        if not isinstance(self.case_id, str) or not self.case_id:
            raise ValueError(f"Volume.case_id must be a non-empty string, got {self.case_id!r}")
        headers = self.dicom_headers
        if headers is not None:
            headers = tuple(headers)
            if len(headers) != array.shape[2]:
                raise ValueError(
                    f"Volume.dicom_headers must have one header per slice ({array.shape[2]}), "
                    f"got {len(headers)}"
                )
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "dicom_headers", headers)
        object.__setattr__(self, "modality", validate_modality(self.modality))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along array axes (i, j, k): the affine's column norms."""
        return spacing_mm(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Volume(case_id={self.case_id!r}, modality={self.modality!r}, "
            f"shape={self.shape}, dtype={self.array.dtype}, spacing={fmt_vec(self.spacing)} mm, "
            f"axcodes={''.join(nib.aff2axcodes(self.affine))})"
        )



def spacing_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the array axes of a voxel -> mm ``affine``: its column norms."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return tuple(float(v) for v in norms)  # type: ignore[return-value]


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm^3) of a voxel -> mm ``affine`` (4x4)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0

