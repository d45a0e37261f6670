"""Tests of anunet_core.synthetic.hard_cases: the QC cohort, read back with the project's own
archive readers, and one property per hard kind that proves its manipulation."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from anunet_core.archives import discover_cases, load_case
from anunet_core.synthetic import HARD_KINDS, make_phantom, make_qc_cohort
from anunet_core.synthetic.hard_cases import COHORT_FILE, CohortCase, read_cohort
from anunet_core.vocabulary import ORGAN_LABEL_VALUES

# the default field of view (384 x 384 x 240 mm) on a coarse grid
GRID = {"shape": (48, 48, 16), "spacing": (8.0, 8.0, 15.0)}
SEED = 5
PER_KIND = 2
LIVER = ORGAN_LABEL_VALUES["liver"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, list[CohortCase]]:
    """``(root, cases)`` of one cohort (2 cases per hard kind, 4 normal), made once."""
    root = tmp_path_factory.mktemp("qc") / "cohort"
    return root, make_qc_cohort(root, PER_KIND, SEED, **GRID)


@pytest.fixture(scope="module")
def loaded(cohort) -> dict[str, tuple[CohortCase, np.ndarray, np.ndarray, np.ndarray]]:
    """case_id -> ``(case, image (I, J, K') HU, mask (I, J, K') 0/1, affine (4, 4))`` read
    with :func:`discover_cases` + :func:`load_case`."""
    root, cases = cohort
    by_id = {c.case_id: c for c in cases}
    out = {}
    for found in discover_cases(root):
        image, mask = load_case(found, "liver", "CT")
        out[found.case_id] = (by_id[found.case_id], image.array, mask, image.affine)
    return out


def _reference(case: CohortCase):
    """The case before its manipulation: the CT phantom of its seed."""
    return make_phantom(case.seed, "CT", **GRID)


def _of_kind(loaded, kind: str):
    items = [v for v in loaded.values() if v[0].kind == kind]
    assert len(items) == (2 * PER_KIND if kind == "normal" else PER_KIND)
    return items


def test_archive_is_msd_and_every_case_loads(cohort, loaded):
    root, cases = cohort
    assert [c.case_id for c in cases] == [f"case_{i:04d}" for i in range(len(cases))]
    assert sorted(loaded) == [c.case_id for c in cases]
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["modality"] == {"0": "CT"} and dataset["numTraining"] == len(cases)
    n_i, n_j, n_k = GRID["shape"]
    for case, image, mask, _ in loaded.values():
        assert image.shape == mask.shape
        if case.kind == "cropped":
            assert image.shape[:2] == (n_i, n_j) and image.shape[2] < n_k
        else:
            assert image.shape == GRID["shape"]
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1} and mask.any()


def test_cohort_json_lists_every_case_and_kind(cohort):
    root, cases = cohort
    assert read_cohort(root) == cases
    meta = json.loads((root / COHORT_FILE).read_text())
    assert [c["case_id"] for c in meta["cases"]] == [c.case_id for c in cases]
    assert meta["kinds"] == ["normal", *HARD_KINDS] and meta["seed"] == SEED
    counts = Counter(c.kind for c in cases)
    assert counts == {"normal": 2 * PER_KIND, **{k: PER_KIND for k in HARD_KINDS}}
    assert len({c.seed for c in cases}) == len(cases)
    assert all(bool(c.detail) == (c.kind != "normal") for c in cases)


def test_kinds_are_not_in_file_names(cohort):
    root, cases = cohort
    names = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    expected = sorted([COHORT_FILE, "dataset.json"]
                      + [f"{d}/{c.case_id}.nii.gz" for d in ("imagesTr", "labelsTr") for c in cases])
    assert names == expected
    assert all(re.fullmatch(r"case_\d{4}", c.case_id) for c in cases)
    # the kinds are shuffled: not one block per kind in case-id order
    kinds = [c.kind for c in cases]
    assert kinds != sorted(kinds, key=["normal", *HARD_KINDS].index)


def test_deterministic_for_a_seed(cohort, tmp_path):
    root, cases = cohort
    again = make_qc_cohort(tmp_path / "again", PER_KIND, SEED, **GRID)
    assert again == cases
    for c in cases:
        for folder in ("imagesTr", "labelsTr"):
            name = f"{folder}/{c.case_id}.nii.gz"
            assert (tmp_path / "again" / name).read_bytes() == (root / name).read_bytes()
    assert (tmp_path / "again" / COHORT_FILE).read_bytes() == (root / COHORT_FILE).read_bytes()
    other = make_qc_cohort(tmp_path / "other", 1, SEED + 1, **GRID, kinds=("noise",))
    assert [c.seed for c in other] != [c.seed for c in cases[:3]]


def test_normal_cases_are_the_plain_phantoms(loaded):
    for case, image, mask, affine in _of_kind(loaded, "normal"):
        ref = _reference(case)
        np.testing.assert_array_equal(image, ref.image)
        np.testing.assert_array_equal(mask, np.isin(ref.labels, LIVER))
        np.testing.assert_allclose(affine, ref.affine)


def _check_mr(case, image, mask, affine, ref):
    # MR arbitrary units given as CT: no air at -1000 HU, nothing negative
    assert ref.image.min() <= -1000
    assert image.min() >= 0 and np.percentile(image, 1) > -500


def _check_noise(case, image, mask, affine, ref):
    # soft tissue (the liver) is much noisier than the same seed's normal phantom
    organ = mask.astype(bool)
    assert image[organ].std() > 100 and image[organ].std() > 4 * ref.image[organ].std()


def _check_bias(case, image, mask, affine, ref):
    # in the body, the change is a smooth ramp (a plane in i, j, to rounding) whose mean over
    # the left quarter and over the right quarter differ by more than 200 HU
    n_i = image.shape[0]
    body = ref.image > -500
    change = image.astype(np.float64) - ref.image
    ii, jj, _ = np.nonzero(body)
    design = np.stack([ii, jj, np.ones_like(ii)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, change[body], rcond=None)
    assert np.abs(design @ coef - change[body]).max() <= 1.0
    left, right = body.copy(), body.copy()
    left[n_i // 4:] = False
    right[: n_i - n_i // 4] = False
    assert abs(change[left].mean() - change[right].mean()) > 200


def _check_cropped(case, image, mask, affine, ref):
    n_k = image.shape[2]
    assert n_k < ref.shape[2]
    assert mask[:, :, 0].any() or mask[:, :, -1].any()
    # the affine follows the crop: every kept voxel is where it was in mm
    start = (affine[2, 3] - ref.affine[2, 3]) / ref.affine[2, 2]
    assert start == int(start) and start in (0, ref.shape[2] - n_k)
    start = int(start)
    np.testing.assert_allclose(affine[:3, :3], ref.affine[:3, :3])
    np.testing.assert_array_equal(image, ref.image[:, :, start:start + n_k])
    np.testing.assert_array_equal(mask, np.isin(ref.labels[:, :, start:start + n_k], LIVER))


def _check_size(case, image, mask, affine, ref):
    ratio = mask.sum() / np.isin(ref.labels, LIVER).sum()
    assert ratio > 1.5 or ratio < 0.67, ratio
    np.testing.assert_allclose(affine, ref.affine)
    assert image.shape == ref.shape


def _check_position(case, image, mask, affine, ref):
    before = np.argwhere(np.isin(ref.labels, LIVER))[:, :2].mean(axis=0)
    after = np.argwhere(mask)[:, :2].mean(axis=0)
    assert np.linalg.norm(after - before) > image.shape[0] / 5
    assert mask.sum() == np.isin(ref.labels, LIVER).sum()  # moved, not cut off
    assert image.min() >= -1024 and (image == -1000).any()


_CHECKS = {
    "mr": _check_mr,
    "noise": _check_noise,
    "bias": _check_bias,
    "cropped": _check_cropped,
    "size": _check_size,
    "position": _check_position,
}


@pytest.mark.parametrize("kind", HARD_KINDS)
def test_each_kind_is_made_hard(loaded, kind):
    for case, image, mask, affine in _of_kind(loaded, kind):
        _CHECKS[kind](case, image, mask.astype(bool), affine, _reference(case))


def test_subset_of_kinds_and_other_cases_refused(tmp_path):
    cases = make_qc_cohort(tmp_path, 1, 3, **GRID, kinds=("noise", "cropped"))
    assert Counter(c.kind for c in cases) == {"normal": 2, "noise": 1, "cropped": 1}
    assert make_qc_cohort(tmp_path, 1, 3, **GRID, kinds=("noise", "cropped")) == cases  # rewrite
    with pytest.raises(ValueError, match="other file"):
        make_qc_cohort(tmp_path, 1, 3, **GRID, kinds=("noise",))  # case_0003 would be stale


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cases_per_kind": 0}, "cases_per_kind"),
        ({"kinds": ("noise", "blur")}, "unknown kind 'blur'"),
        ({"kinds": ("normal",)}, "unknown kind 'normal'"),
        ({"kinds": ("noise", "noise")}, "repeat"),
        ({"organ": "pancreas"}, "organ"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        make_qc_cohort(tmp_path / "out", **{**GRID, **kwargs})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_kinds_as_one_string_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="sequence of kind names"):
        make_qc_cohort(tmp_path, **GRID, kinds="noise")
