"""Fixtures shared by the anunet_core.io tests."""

from __future__ import annotations

import pytest
from testkit import REAL_CT_DICOM, need_real_data

from anunet_core.io import read_dicom_series, read_label_nifti


@pytest.fixture(scope="module")
def real_ct():
    """The real TotalSegmentator CT series (JPEG 2000 DICOM) with its labels and their affine."""
    folder = need_real_data(REAL_CT_DICOM / "dicom")
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    if not JPEG2000LosslessDecoder.is_available:
        pytest.skip("no JPEG 2000 decoder for pydicom (Pillow with OpenJPEG) in this environment")
    image = read_dicom_series(folder)
    labels, affine = read_label_nifti(need_real_data(REAL_CT_DICOM / "labels.nii.gz"))
    return image, labels, affine
