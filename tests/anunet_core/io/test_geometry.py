"""Tests of anunet_core.io.geometry: the SliceGeometry record on its own (preprocessing makes
it; tests/anunet_core/test_preprocessing.py checks the records it makes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anunet_core.io import SliceGeometry

# A standard axial DICOM series, 400 x 300 pixels of 0.8 mm, 60 slices of 2.5 mm, stored LPS:
# array axes (i, j, k) run to patient left, posterior, superior.
LPS_AFFINE = np.array([[-0.8, 0, 0, 100.0], [0, -0.8, 0, 80.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])


def _geometry(**changes) -> SliceGeometry:
    fields = dict(
        original_shape=(400, 300, 60),
        original_affine=LPS_AFFINE,
        ornt=[[0, -1], [1, -1], [2, 1]],  # flip i and j: LPS -> RAS
        inplane_shape=(300, 400),
        size=256,
        modality="ct",
        intensity_window=(-200, 200),
        percentiles=None,
        output_range=(0, 1),
        version="anunet-prep-1",
    )
    return SliceGeometry(**{**fields, **changes})


def test_fields_are_normalised_to_plain_tuples() -> None:
    geometry = _geometry()
    assert geometry.original_shape == (400, 300, 60) and geometry.modality == "CT"
    assert geometry.ornt == ((0, -1), (1, -1), (2, 1))
    assert geometry.intensity_window == (-200.0, 200.0) and geometry.output_range == (0.0, 1.0)
    assert isinstance(geometry.original_affine[0], tuple)
    np.testing.assert_array_equal(geometry.affine, LPS_AFFINE)


def test_slice_count_pixel_spacing_and_canonical_affine() -> None:
    geometry = _geometry()
    assert geometry.num_slices == 60  # the source axis that becomes S
    # rows run A -> P over 300 voxels of 0.8 mm, columns R -> L over 400; resized to 256
    np.testing.assert_allclose(geometry.pixel_spacing_mm, (0.8 * 300 / 256, 0.8 * 400 / 256))
    canonical = geometry.canonical_affine
    np.testing.assert_allclose(np.diag(canonical)[:3], (0.8, 0.8, 2.5))
    # voxel (0, 0, 0) of the RAS array is the source's far corner in i and j
    corner = LPS_AFFINE @ np.array([399, 299, 0, 1.0])
    np.testing.assert_allclose(canonical[:, 3], corner)


def test_json_round_trip_is_exact() -> None:
    geometry = _geometry(modality="MR", intensity_window=(3.5, 812.25), percentiles=(0.5, 99.5))
    back = SliceGeometry.from_dict(json.loads(json.dumps(geometry.to_dict())))
    assert back == geometry and back.percentiles == (0.5, 99.5)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"original_shape": (400, 300)}, "3 entries"),
        ({"original_affine": np.eye(3)}, "4x4"),
        ({"ornt": [[0, 1], [0, 1], [2, 1]]}, "orientation"),
        ({"ornt": [[0, 2], [1, 1], [2, 1]]}, "orientation"),
        ({"inplane_shape": (300,)}, "inplane_shape"),
        ({"size": 0}, "size"),
    ],
)
def test_invalid_records_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _geometry(**changes)


def test_from_dict_names_missing_and_unknown_keys() -> None:
    data = _geometry().to_dict()
    with pytest.raises(ValueError, match=r"missing keys \['version'\]"):
        SliceGeometry.from_dict({k: v for k, v in data.items() if k != "version"})
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        SliceGeometry.from_dict({**data, "colour": "red"})
