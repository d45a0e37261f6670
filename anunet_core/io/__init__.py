"""Scans in and masks out: the volume type, NIfTI, DICOM series, label alignment, atomic writes."""

from anunet_core.atomic import write_atomic
from anunet_core.preprocessing import SliceGeometry
from anunet_core.volumes import (
    LabelMismatchError,
    Volume,
    VolumeReadError,
    align_label_to_image,
    read_dicom_series,
    read_label_nifti,
    read_nifti,
    read_volume,
    voxel_volume_ml,
    write_mask,
)

__all__ = [
    "LabelMismatchError",
    "SliceGeometry",
    "Volume",
    "VolumeReadError",
    "align_label_to_image",
    "read_dicom_series",
    "read_label_nifti",
    "read_nifti",
    "read_volume",
    "voxel_volume_ml",
    "write_atomic",
    "write_mask",
]
