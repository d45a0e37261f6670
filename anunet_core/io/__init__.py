"""Scans in and masks out, in each scan's own geometry.

One concept per module:

- ``volume``: :class:`Volume` (array, affine, modality, case id), the read errors and the voxel
  cap (:data:`DEFAULT_MAX_VOXELS`, :class:`VolumeTooLarge`: checked on headers, before loading);
- ``geometry``: :class:`SliceGeometry`, the record that maps model slices back to a scan;
- ``nifti``: NIfTI images and labels in, masks out (:func:`write_mask`, with the description
  :func:`read_mask_description` reads back);
- ``dicom``: one DICOM series in (:func:`read_dicom_series`), the slice-order rule and the
  DICOM sniffing rules (:func:`has_dicom_preamble`, :func:`might_be_dicom_slice`);
- ``dicom_seg``: one DICOM Segmentation per DICOM case (:func:`write_dicom_seg`, one
  :class:`SegSegment` per organ; :func:`read_dicom_seg` back onto the source grid; the source
  headers as JSON between job stages: :func:`encode_source_headers`,
  :func:`decode_source_headers`; :class:`DicomSegError`);
- ``labels``: :func:`align_label_to_image`, a label grid onto its image's, exactly;
- ``read``: :func:`read_volume`, whichever the scan is stored as;
- ``lock``: :func:`output_lock`, one run at a time per output (a lease a dead run's successor
  takes over);
- ``atomic``: :func:`write_atomic`, :func:`write_json_atomic`, :func:`write_folder_atomic`: the
  one way every output file and folder is written.
"""

from anunet_core.io.atomic import (
    recover_folder,
    write_atomic,
    write_folder_atomic,
    write_json_atomic,
)
from anunet_core.io.dicom import (
    has_dicom_preamble,
    is_image_sop_class,
    might_be_dicom_slice,
    read_dicom_series,
    slice_order,
)
from anunet_core.io.dicom_seg import (
    DicomSegError,
    SegSegment,
    decode_source_headers,
    encode_source_headers,
    read_dicom_seg,
    write_dicom_seg,
)
from anunet_core.io.geometry import SliceGeometry
from anunet_core.io.labels import align_label_to_image
from anunet_core.io.lock import OutputLocked, output_lock
from anunet_core.io.nifti import (
    is_nifti_name,
    read_label_nifti,
    read_mask_description,
    read_nifti,
    write_mask,
)
from anunet_core.io.read import read_volume
from anunet_core.io.volume import (
    DEFAULT_MAX_VOXELS,
    LabelMismatchError,
    Volume,
    VolumeReadError,
    VolumeTooLarge,
    check_voxel_count,
    spacing_mm,
    voxel_volume_ml,
)

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DicomSegError",
    "LabelMismatchError",
    "OutputLocked",
    "SegSegment",
    "SliceGeometry",
    "Volume",
    "VolumeReadError",
    "VolumeTooLarge",
    "align_label_to_image",
    "check_voxel_count",
    "decode_source_headers",
    "encode_source_headers",
    "has_dicom_preamble",
    "is_image_sop_class",
    "is_nifti_name",
    "might_be_dicom_slice",
    "output_lock",
    "read_dicom_seg",
    "read_dicom_series",
    "read_label_nifti",
    "read_mask_description",
    "read_nifti",
    "read_volume",
    "recover_folder",
    "slice_order",
    "spacing_mm",
    "voxel_volume_ml",
    "write_atomic",
    "write_dicom_seg",
    "write_folder_atomic",
    "write_json_atomic",
    "write_mask",
]
