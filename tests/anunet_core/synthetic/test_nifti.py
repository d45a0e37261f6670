"""Tests of anunet_core.synthetic.nifti: the NIfTI pairs, MSD and LiTS layouts, read back with
nibabel directly (not with the project's own readers)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from anunet_core.synthetic import write_lits, write_msd, write_nifti_pairs
from anunet_core.vocabulary import MODALITIES, ORGAN_LABEL_VALUES, ORGANS, TOTALSEG_LABELS


@pytest.mark.parametrize("modality", MODALITIES)
def test_write_nifti_pairs_reads_back(tmp_path, small, no_temp_files, modality):
    phantoms = small[modality]
    cases = write_nifti_pairs(tmp_path, phantoms)
    assert cases == [tmp_path / p.case_id for p in phantoms]
    for p in phantoms:
        img = nib.load(tmp_path / p.case_id / "image.nii.gz")
        lab = nib.load(tmp_path / p.case_id / "labels.nii.gz")
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(img.get_fdata(), p.image)
        np.testing.assert_array_equal(np.asarray(lab.dataobj), p.labels)
        for im in (img, lab):
            np.testing.assert_allclose(im.affine, p.affine)
            assert int(im.header["qform_code"]) == int(im.header["sform_code"]) == 1
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("organ", ORGANS)
def test_write_msd_binary_labels(tmp_path, small, organ):
    phantoms = small["CT"]
    images = write_msd(tmp_path, phantoms, organ)
    assert images == [tmp_path / "imagesTr" / f"{p.case_id}.nii.gz" for p in phantoms]
    for p in phantoms:
        lab = nib.load(tmp_path / "labelsTr" / f"{p.case_id}.nii.gz")
        expected = np.isin(p.labels, ORGAN_LABEL_VALUES[organ]).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(lab.dataobj), expected)
        np.testing.assert_allclose(lab.affine, p.affine)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": organ}
    assert meta["numTraining"] == len(phantoms)
    assert meta["training"][0] == {"image": "./imagesTr/case_0000.nii.gz",
                                   "label": "./labelsTr/case_0000.nii.gz"}


def test_write_lits_uncompressed_with_lesions(tmp_path, small):
    phantoms = small["CT"]
    volumes = write_lits(tmp_path, phantoms)
    assert volumes == [tmp_path / f"volume-{n}.nii" for n in range(len(phantoms))]
    for n, p in enumerate(phantoms):
        for f in (tmp_path / f"volume-{n}.nii", tmp_path / f"segmentation-{n}.nii"):
            assert f.read_bytes()[:2] != b"\x1f\x8b"  # not gzip
        seg = np.asarray(nib.load(tmp_path / f"segmentation-{n}.nii").dataobj)
        np.testing.assert_array_equal(seg > 0, p.labels == TOTALSEG_LABELS["liver"])
        np.testing.assert_array_equal(seg == 2, p.lesions)
        assert set(np.unique(seg)) == {0, 1, 2}
        np.testing.assert_array_equal(nib.load(tmp_path / f"volume-{n}.nii").get_fdata(), p.image)
