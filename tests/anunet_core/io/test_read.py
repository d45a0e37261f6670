"""Tests of anunet_core.io.read: one reader for NIfTI files and DICOM folders."""

from __future__ import annotations

import pytest
from dicom_series import write_series

from anunet_core.io import VolumeReadError, read_volume


def test_read_volume_dispatch_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(VolumeReadError, match="not a NIfTI"):
        read_volume(tmp_path / "x.png")
    with pytest.raises(ValueError, match="pass modality"):
        read_volume(tmp_path / "x.nii.gz")
    write_series(tmp_path / "d", n=2)
    assert read_volume(tmp_path / "d").shape == (4, 6, 2)


