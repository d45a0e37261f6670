"""Read a scan whatever it is stored as: a NIfTI file or a DICOM series folder."""

from __future__ import annotations

import os
from pathlib import Path

from anunet_core.io.dicom import read_dicom_series
from anunet_core.io.nifti import is_nifti_name, read_nifti
from anunet_core.io.volume import DEFAULT_MAX_VOXELS, Volume, VolumeReadError

__all__ = ["read_volume"]


def read_volume(
    path: str | os.PathLike,
    modality: str | None = None,
    case_id: str | None = None,
    *,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Read a scan: a ``.nii``/``.nii.gz`` file (``modality`` required) or a DICOM folder.

    ``max_voxels``: a scan whose header claims more voxels raises
    :class:`~anunet_core.io.volume.VolumeTooLarge` before any pixel is read (None: no cap).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, modality=modality, case_id=case_id, max_voxels=max_voxels)
    if is_nifti_name(path):
        if modality is None:
            raise ValueError(f"{path}: NIfTI has no modality tag; pass modality='CT' or 'MR'")
        return read_nifti(path, modality, case_id, max_voxels=max_voxels)
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or directory")
    raise VolumeReadError(f"{path}: not a NIfTI file (.nii, .nii.gz) or a DICOM folder")
