"""Fixtures shared by the anunet_core tests."""

from __future__ import annotations

import pytest
import torch

from anunet_core import ANUNet
from anunet_core.io import read_dicom_series, read_label_nifti
from testkit import REAL_CT_DICOM, need_real_data, randomize_batchnorm


@pytest.fixture(scope="module")
def trained_like() -> ANUNet:
    """An eval-mode ANU-Net whose BatchNorms are not identities (as after training)."""
    torch.manual_seed(0)
    return randomize_batchnorm(ANUNet()).eval()


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions on a shared 2-core machine run fastest on one thread (restored after the module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
