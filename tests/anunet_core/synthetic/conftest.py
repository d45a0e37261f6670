"""Fixtures shared by the tests of anunet_core.synthetic: phantom cohorts, small phantoms on a
coarse grid, and checks several writer tests make."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from anunet_core.synthetic import Phantom, make_phantom
from anunet_core.vocabulary import MODALITIES

# a coarse grid for the writer tests: same field of view, 1/64 of the voxels
SMALL = {"shape": (48, 40, 12), "spacing": (8.0, 9.6, 20.0)}


class _Cohort(dict):
    """modality -> 18 full-size phantoms (seeds 1000..1017; MR: the default T2SPIR), each
    modality made on first use."""

    def __missing__(self, modality: str) -> list[Phantom]:
        self[modality] = [make_phantom(1000 + i, modality) for i in range(18)]
        return self[modality]


@pytest.fixture(scope="package")
def cohort() -> dict[str, list[Phantom]]:
    """18 full-size phantoms per modality, made once for every test module here."""
    return _Cohort()


@pytest.fixture(scope="session")
def small_grid() -> dict:
    """``make_phantom`` keyword arguments of the coarse grid: ``shape`` (48, 40, 12) voxels,
    ``spacing`` (8.0, 9.6, 20.0) mm."""
    return {"shape": SMALL["shape"], "spacing": SMALL["spacing"]}


@pytest.fixture(scope="module")
def small() -> dict[str, list[Phantom]]:
    """Two phantoms per modality on the coarse grid, case ids case_0000 and case_0001."""
    return {
        m: [make_phantom(s, m, case_id=f"case_{i:04d}", **SMALL) for i, s in enumerate((3, 4))]
        for m in MODALITIES
    }


@pytest.fixture
def no_temp_files() -> Callable[[Path], bool]:
    """``check(root)``: True when no hidden (temporary) file or folder is left under ``root``."""
    return lambda root: not any(f.name.startswith(".") for f in root.rglob("*"))


def _on_stored_grid(volume: np.ndarray, affine: np.ndarray, standard: bool):
    """The phantom's array and affine on the grid the DICOM stores (i, j reversed if standard)."""
    if not standard:
        return volume, affine
    flipped = affine.copy()
    n_i, n_j = volume.shape[:2]
    flipped[:3, 3] += (n_i - 1) * affine[:3, 0] + (n_j - 1) * affine[:3, 1]
    flipped[:3, :2] *= -1
    return volume[::-1, ::-1], flipped


@pytest.fixture
def on_stored_grid():
    """``flip(volume (I, J, K), affine, standard)`` -> the array and affine on the grid a DICOM
    series stores (``standard_orientation=True``: i and j reversed, the same world positions)."""
    return _on_stored_grid
