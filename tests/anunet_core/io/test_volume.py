"""Tests of anunet_core.io.volume: the Volume type's checks."""

from __future__ import annotations

import numpy as np
import pytest

from anunet_core.io import Volume


def test_volume_validation():
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((2, 2)), np.eye(4), "CT", "x")
    with pytest.raises(ValueError, match="modality"):
        Volume(np.zeros((2, 2, 2)), np.eye(4), "PET", "x")
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1, 0, 1, 1]), "CT", "x")
    vol = Volume(np.zeros((2, 2, 2)), np.diag([2, 3, 4, 1]), "mr", "x")
    assert vol.spacing == (2.0, 3.0, 4.0) and vol.modality == "MR"


