"""Tests of anunet_core.archives: layout detection, case discovery and loading, checksums."""

from __future__ import annotations

import pickle
import re
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from anunet_core.archives import (
    LAYOUTS,
    ArchiveError,
    Case,
    case_checksum,
    default_label_values,
    detect_layout,
    discover_cases,
    load_case,
    source_files,
)
from anunet_core.synthetic import (
    make_phantom,
    write_chaos_mr,
    write_dicom_archive,
    write_dicom_series,
    write_lits,
    write_msd,
    write_nifti_pairs,
    write_png_gray,
)
from anunet_core.io import LabelMismatchError, Volume, VolumeReadError
from anunet_core.vocabulary import CHAOS_GREY

CHAOS_CODES = {label: grey for label, grey, _, _ in CHAOS_GREY}  # label value -> grey written

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
CT_DIR = REAL / "totalseg-ct-dicom"
MR_DIR = REAL / "totalseg-mr"

# Non-square in-plane and few slices: a swapped or flipped axis cannot go unnoticed.
SHAPE = (32, 28, 8)
SPACING = (12.0, 12.0, 30.0)
LIVER, SPLEEN, KIDNEYS = (5,), (1,), (2, 3)
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _phantom(seed: int, modality: str = "CT", **kw):
    return make_phantom(seed, modality, SHAPE, SPACING, case_id=f"case_{seed:04d}", **kw)


def truth_on_grid(truth: np.ndarray, truth_affine: np.ndarray, image: Volume) -> np.ndarray:
    """``truth`` resampled onto ``image``'s grid by mapping every voxel centre through the two
    affines (world mm), independently of align_label_to_image; the grids must coincide."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), axis=-1)
    index = grid.reshape(-1, 3).T.astype(np.float64)
    world = image.affine[:3, :3] @ index + image.affine[:3, 3:]
    back = np.linalg.inv(truth_affine) @ np.vstack([world, np.ones((1, world.shape[1]))])
    nearest = np.rint(back[:3]).astype(int)
    np.testing.assert_allclose(back[:3], nearest, atol=1e-3)
    return truth[nearest[0], nearest[1], nearest[2]].reshape(image.shape)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# ----------------------------------------------------------------------------------------------
# A small archive in every layout
# ----------------------------------------------------------------------------------------------


def _chaos_series(series: Path, ground: Path | None, phantom, perm: np.ndarray, prefix: str):
    """One CHAOS-style series whose file names are in a shuffled order relative to the slice
    positions: slice k is named ``<prefix>-<perm[k]>``; its PNG ``<perm[k]>.png`` in ground."""
    tmp = series.parent / f"tmp-{series.name}"
    files = write_dicom_series(tmp, phantom, names="uid")  # in slice order k
    series.mkdir(parents=True)
    lut = np.zeros(256, dtype=np.uint8)
    for value, code in CHAOS_CODES.items():
        lut[value] = code
    for k, path in enumerate(files):
        path.rename(series / f"{prefix}-{perm[k]:05d}.dcm")
        if ground is not None:
            # PNG pixel (row r, col c) = DICOM pixel_array[r, c] = image[c, r, k]
            write_png_gray(ground / f"gt_{perm[k]:03d}.png", lut[phantom.labels[:, :, k]].T.copy())
    shutil.rmtree(tmp)


def build_archive(layout: str, root: Path) -> dict[str, tuple[str, object]]:
    """Write a small archive; returns {case_id: (patient_id, phantom)} of the labelled cases."""
    root.mkdir(parents=True, exist_ok=True)
    if layout == "lits":
        p0, p1, p2 = _phantom(0), _phantom(1), _phantom(2)
        write_lits(root / "Training Batch 1", [p0, p1])
        write_lits(root / "Training Batch 2", [p2], first_index=10)
        return {"lits-0": ("lits-0", p0), "lits-1": ("lits-1", p1), "lits-10": ("lits-10", p2)}
    if layout == "chaos":
        p1, p2 = _phantom(1, "MR"), _phantom(2, "MR")
        write_chaos_mr(root, [p1, p2], standard_orientation=True)  # MR/1, MR/2 T2SPIR
        t1 = _phantom(1, "MR", sequence="T1")
        perm = np.random.default_rng(5).permutation(SHAPE[2])
        base = root / "MR" / "1" / "T1DUAL"
        (base / "Ground").mkdir(parents=True)
        _chaos_series(base / "DICOM_anon" / "InPhase", base / "Ground", t1, perm, "IMG-0004")
        _chaos_series(base / "DICOM_anon" / "OutPhase", None, t1, perm, "IMG-0005")
        return {
            "chaos-1-t1in": ("chaos-1", t1),
            "chaos-1-t1out": ("chaos-1", t1),
            "chaos-1-t2spir": ("chaos-1", p1),
            "chaos-2-t2spir": ("chaos-2", p2),
        }
    phantoms = [_phantom(s) for s in (3, 4)]
    expected = {p.case_id: (p.case_id, p) for p in phantoms}
    if layout == "msd":
        write_msd(root, phantoms, "liver")
        (root / "imagesTr" / "._case_0003.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    elif layout == "dicom":
        write_dicom_archive(root, phantoms, standard_orientation=True)
        (root / "case_0003" / "dicom" / "._x.dcm").write_bytes(b"\x00\x05\x16\x07" * 40)
    elif layout == "pairs":
        write_nifti_pairs(root, phantoms)
        (root / "case_0003" / "._image.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    else:
        raise AssertionError(layout)
    return expected


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    base = tmp_path_factory.mktemp("archives")
    return {layout: (base / layout, build_archive(layout, base / layout)) for layout in LAYOUTS}


def _organ_truth(layout: str, phantom, values=LIVER) -> np.ndarray:
    truth = np.isin(phantom.labels, values)
    if layout == "lits" and values == LIVER:
        truth |= phantom.lesions
    return truth.astype(np.uint8)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_detect_and_discover(archives, layout):
    root, expected = archives[layout]
    assert detect_layout(root) == layout
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == sorted(expected)
    assert {c.case_id: c.patient_id for c in cases} == {k: v[0] for k, v in expected.items()}
    assert all(c.layout == layout and c.label is not None for c in cases)
    assert all(SAFE_ID.match(c.case_id) for c in cases)
    assert discover_cases(root, layout=layout) == cases
    assert discover_cases(str(root), layout=layout.upper(), require_labels=True) == cases
    want_modality = {"lits": "CT", "chaos": "MR"}.get(layout)
    assert {c.modality for c in cases} == {want_modality}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_case_puts_the_organ_where_it_was_written(archives, layout):
    root, expected = archives[layout]
    modality = None if layout in ("lits", "chaos", "dicom") else "CT"
    for case in discover_cases(root):
        phantom = expected[case.case_id][1]
        image, mask = load_case(case, "liver", modality=modality)
        assert isinstance(image, Volume) and image.case_id == case.case_id
        assert image.modality == phantom.modality
        assert mask.shape == image.shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}
        # The image itself came through the same geometry as the truth...
        expected_image = truth_on_grid(phantom.image, phantom.affine, image)
        np.testing.assert_array_equal(image.array, expected_image)
        # ... and the organ lies where it was written.
        truth = truth_on_grid(_organ_truth(layout, phantom), phantom.affine, image)
        np.testing.assert_array_equal(mask, truth)
        image2, none = load_case(case, "liver", modality=modality, with_label=False)
        assert none is None
        np.testing.assert_array_equal(image2.array, image.array)


@pytest.mark.parametrize("layout", ["chaos", "dicom", "pairs"])
def test_kidney_is_both_kidneys_and_spleen_its_code(archives, layout):
    root, expected = archives[layout]
    case = discover_cases(root)[-1]
    phantom = expected[case.case_id][1]
    modality = "CT" if layout == "pairs" else None
    for organ, values in (("kidney", KIDNEYS), ("spleen", SPLEEN)):
        image, mask = load_case(case, organ, modality=modality)
        organ_truth = np.isin(phantom.labels, values).astype(np.uint8)
        truth = truth_on_grid(organ_truth, phantom.affine, image)
        assert truth.sum() > 0
        np.testing.assert_array_equal(mask, truth)


def test_dicom_lps_series_gets_the_ras_labels_flipped(archives):
    """standard_orientation DICOM stores the phantom's grid reversed in i and j (LPS); its
    RAS labels.nii.gz must come out flipped the same way."""
    root, expected = archives["dicom"]
    case = discover_cases(root)[0]
    phantom = expected[case.case_id][1]
    image, mask = load_case(case, "liver")
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert nib.aff2axcodes(phantom.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(image.array, phantom.image[::-1, ::-1, :])
    np.testing.assert_array_equal(mask, (phantom.labels == 5)[::-1, ::-1, :])


def test_chaos_pngs_follow_the_slice_positions_not_the_name_order(archives):
    root, expected = archives["chaos"]
    cases = {c.case_id: c for c in discover_cases(root)}
    phantom = expected["chaos-1-t1in"][1]
    masks = []
    for case_id in ("chaos-1-t1in", "chaos-1-t1out"):
        case = cases[case_id]
        assert case.label.name == "Ground" and case.label.parent.name == "T1DUAL"
        image, mask = load_case(case, "liver")
        # the shuffled names must not matter: slices come back in position order
        np.testing.assert_array_equal(image.array, phantom.image)
        np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
        masks.append(mask)
    assert masks[0].sum() > 0
    # spot-check one slice by hand: the PNG named like the DICOM file of slice k holds slice k
    perm = np.random.default_rng(5).permutation(SHAPE[2])
    k = int(np.argmax((phantom.labels == 5).sum(axis=(0, 1))))
    png = _read_png(cases["chaos-1-t1in"].label / f"gt_{perm[k]:03d}.png")
    np.testing.assert_array_equal((png == CHAOS_CODES[5]).T, masks[0][:, :, k] == 1)


def test_chaos_root_may_be_the_mr_folder_or_above_it(archives, tmp_path):
    root, expected = archives["chaos"]
    ids = sorted(expected)
    assert [c.case_id for c in discover_cases(root / "MR")] == ids
    assert detect_layout(root / "MR") == "chaos"
    (tmp_path / "Train_Sets").symlink_to(root, target_is_directory=True)  # CHAOS zip layout
    assert detect_layout(tmp_path) == "chaos"
    assert [c.case_id for c in discover_cases(tmp_path)] == ids


# ----------------------------------------------------------------------------------------------
# Layout details
# ----------------------------------------------------------------------------------------------


def test_lits_test_volumes_and_pairing(tmp_path):
    p0, p1 = _phantom(0), _phantom(1)
    write_lits(tmp_path / "volumes", [p0, p1])
    (tmp_path / "segmentations").mkdir()
    for n in (0, 1):  # LiTS split into volumes/ + segmentations/ folders
        (tmp_path / "volumes" / f"segmentation-{n}.nii").rename(
            tmp_path / "segmentations" / f"segmentation-{n}.nii"
        )
    shutil.copy(tmp_path / "volumes" / "volume-1.nii", tmp_path / "test-volume-3.nii")
    cases = discover_cases(tmp_path)
    assert [(c.case_id, c.label is not None) for c in cases] == [
        ("lits-0", True),
        ("lits-1", True),
        ("lits-test-3", False),
    ]
    assert cases[1].label == tmp_path / "segmentations" / "segmentation-1.nii"
    # require_labels leaves out only what is unlabelled by design (the test set)
    labelled = discover_cases(tmp_path, require_labels=True)
    assert [c.case_id for c in labelled] == ["lits-0", "lits-1"]
    image, mask = load_case(cases[2], "liver")
    assert mask is None and image.modality == "CT"


def test_lits_has_only_liver_labels(archives):
    root, expected = archives["lits"]
    case = discover_cases(root)[0]
    assert default_label_values("lits", "liver") == frozenset({1, 2})
    for organ in ("spleen", "kidney"):
        with pytest.raises(ArchiveError, match="LiTS labels only the liver") as info:
            load_case(case, organ)
        one_line(info.value)
        with pytest.raises(ArchiveError, match="LiTS labels only the liver"):
            default_label_values("lits", organ)
        image, mask = load_case(case, organ, with_label=False)  # segmentation job: fine
        assert mask is None and image.shape == SHAPE
    # override: liver without the tumour
    phantom = expected[case.case_id][1]
    _, mask = load_case(case, "liver", label_values=[1])
    np.testing.assert_array_equal(mask, ((phantom.labels == 5) & ~phantom.lesions).astype(np.uint8))
    assert phantom.lesions.any()


def test_lits_modality_is_ct(archives):
    root, _ = archives["lits"]
    case = discover_cases(root)[0]
    assert load_case(case, "liver", modality="ct")[0].modality == "CT"
    with pytest.raises(ArchiveError, match="holds CT scans"):
        load_case(case, "liver", modality="MR")


def test_msd_test_images_nnunet_suffix_and_macos_files(archives, tmp_path):
    root, expected = archives["msd"]
    task = tmp_path / "decathlon" / "Task03_Liver"
    shutil.copytree(root, task)
    (task / "imagesTs").mkdir()
    shutil.copy(task / "imagesTr" / "case_0004.nii.gz", task / "imagesTs" / "case_0099.nii.gz")
    (task / "imagesTs" / "._case_0099.nii.gz").write_bytes(b"junk")
    (task / "__MACOSX").mkdir()
    (task / "__MACOSX" / "._case_0004.nii.gz").write_bytes(b"junk")
    cases = discover_cases(tmp_path / "decathlon")  # the task folder one level down
    assert detect_layout(tmp_path / "decathlon") == detect_layout(tmp_path) == "msd"
    assert discover_cases(tmp_path) == cases  # ... or two
    assert [(c.case_id, c.label is not None) for c in cases] == [
        ("case_0003", True),
        ("case_0004", True),
        ("case_0099", False),
    ]
    assert [c.case_id for c in discover_cases(tmp_path, require_labels=True)] == sorted(expected)
    # nnU-Net v2 channel suffix: imagesTr/<case>_0000.nii.gz <-> labelsTr/<case>.nii.gz
    for name in ("case_0003", "case_0004"):
        (task / "imagesTr" / f"{name}.nii.gz").rename(task / "imagesTr" / f"{name}_0000.nii.gz")
    images = task / "imagesTr"
    shutil.copy(images / "case_0003_0000.nii.gz", images / "case_0003_0001.nii.gz")
    shutil.copy(images / "case_0003_0000.nii.gz", images / "case_0007_0000.nii.gz")  # no label
    (task / "imagesTs" / "case_0099.nii.gz").rename(task / "imagesTs" / "case_0099_0000.nii.gz")
    cases = discover_cases(tmp_path)
    assert [(c.case_id, c.image.name, c.label and c.label.name) for c in cases] == [
        ("case_0003", "case_0003_0000.nii.gz", "case_0003.nii.gz"),
        ("case_0004", "case_0004_0000.nii.gz", "case_0004.nii.gz"),
        ("case_0007", "case_0007_0000.nii.gz", None),
        ("case_0099", "case_0099_0000.nii.gz", None),
    ]
    phantom = expected["case_0003"][1]
    image, mask = load_case(cases[0], "liver", modality="CT")
    np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
    assert default_label_values("msd", "spleen") == frozenset({1, 2})


def test_dicom_case_ids_labels_beside_and_nested_folders(archives, tmp_path):
    root, _ = archives["dicom"]
    shutil.copytree(root / "case_0003" / "dicom", tmp_path / "site b" / "patient7")
    shutil.copy(root / "case_0003" / "labels.nii.gz", tmp_path / "site b" / "patient7.nii.gz")
    shutil.copytree(root / "case_0004" / "dicom", tmp_path / "P2" / "series")
    shutil.copy(root / "case_0004" / "labels.nii.gz", tmp_path / "P2" / "series" / "seg.nii.gz")
    shutil.copytree(root / "case_0004" / "dicom", tmp_path / "P2" / "nolabel")
    (tmp_path / "P2" / "nolabel" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    (tmp_path / "README.txt").write_text("not a scan")
    cases = discover_cases(tmp_path)
    assert detect_layout(tmp_path) == "dicom"
    ids = [c.case_id for c in cases]
    assert ids[:2] == ["P2__nolabel", "P2__series"]
    assert ids[2].startswith("site_b-") and ids[2].endswith("__patient7")  # space -> _ + hash
    assert all(SAFE_ID.match(i) for i in ids)
    by_id = {c.case_id: c for c in cases}
    assert by_id["P2__nolabel"].label is None
    assert by_id["P2__series"].label.name == "seg.nii.gz"
    assert by_id[ids[2]].label.name == "patient7.nii.gz"
    assert all(p.suffix == ".dcm" for p in source_files(by_id["P2__nolabel"]))  # no DICOMDIR
    image, mask = load_case(by_id[ids[2]], "liver")
    assert image.case_id == ids[2] and mask.sum() > 0
    # ids never depend on DICOM tags (PatientName/PatientID are "SYNTH-case_...")
    assert not any("SYNTH" in i for i in ids)


def test_dicom_modality_tag_is_checked(archives):
    root, _ = archives["dicom"]
    case = discover_cases(root)[0]
    assert load_case(case, "liver", modality="CT", with_label=False)[0].modality == "CT"
    with pytest.raises(ArchiveError, match="DICOM Modality is CT") as info:
        load_case(case, "liver", modality="MR")
    one_line(info.value)


def test_pairs_flat_folder_and_label_on_another_grid(archives, tmp_path):
    root, expected = archives["pairs"]
    phantom = expected["case_0003"][1]
    img = nib.load(root / "case_0003" / "image.nii.gz")
    nib.save(img, tmp_path / "liver 07.nii.gz")
    # the label stored transposed and flipped, with the matching affine: same voxels in space
    labels = np.asarray(nib.load(root / "case_0003" / "labels.nii.gz").dataobj)
    affine = phantom.affine.copy()
    flipped = labels[::-1].transpose(2, 0, 1)
    lab_affine = affine @ np.array(
        [[0, -1, 0, SHAPE[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    nib.save(nib.Nifti1Image(flipped, lab_affine), tmp_path / "liver 07_seg.nii.gz")
    shutil.copy(root / "case_0004" / "image.nii.gz", tmp_path / "other.nii")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "orphan_mask.nii.gz")
    cases = discover_cases(tmp_path)
    assert detect_layout(tmp_path) == "pairs"
    assert [c.case_id for c in cases] == sorted([cases[0].case_id, "other"])
    flat = next(c for c in cases if c.case_id != "other")
    assert flat.case_id.startswith("liver_07-") and flat.label.name == "liver 07_seg.nii.gz"
    assert next(c for c in cases if c.case_id == "other").label is None
    image, mask = load_case(flat, "liver", modality="CT")
    np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
    with pytest.raises(ArchiveError, match="no modality tag"):
        load_case(flat, "liver")


def test_pairs_case_folder_subfolders_are_not_cases(archives, tmp_path):
    """TotalSegmentator's dataset: s0001/ct.nii.gz + s0001/segmentations/<structure>.nii.gz.
    The per-structure masks must not become cases of their own."""
    root, _ = archives["pairs"]
    case_dir = tmp_path / "s0001"
    (case_dir / "segmentations").mkdir(parents=True)
    shutil.copy(root / "case_0003" / "image.nii.gz", case_dir / "ct.nii.gz")
    for organ in ("liver", "spleen", "kidney_left"):
        target = case_dir / "segmentations" / f"{organ}.nii.gz"
        shutil.copy(root / "case_0003" / "labels.nii.gz", target)
    (case,) = discover_cases(tmp_path)
    assert (case.case_id, case.image.name, case.label) == ("s0001", "ct.nii.gz", None)


def test_label_on_another_region_is_a_label_mismatch(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root / "case_0003", tmp_path / "case_x")
    lab = nib.load(tmp_path / "case_x" / "labels.nii.gz")
    moved = lab.affine.copy()
    moved[:3, 3] += 5 * np.array(SPACING)  # shifted by whole voxels
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), moved), tmp_path / "case_x" / "labels.nii.gz")
    case = discover_cases(tmp_path)[0]
    with pytest.raises(LabelMismatchError, match="labels.nii.gz") as info:
        load_case(case, "liver", modality="CT")
    one_line(info.value)


def test_label_values_override(archives):
    root, expected = archives["pairs"]
    case = discover_cases(root)[0]
    phantom = expected[case.case_id][1]
    _, mask = load_case(case, "liver", modality="CT", label_values=[1])
    np.testing.assert_array_equal(mask, (phantom.labels == 1).astype(np.uint8))
    _, mask = load_case(case, "kidney", modality="CT", label_values=5)
    np.testing.assert_array_equal(mask, (phantom.labels == 5).astype(np.uint8))
    _, mask = load_case(case, "liver", modality="CT", label_values=(np.int64(2), 3.0))
    np.testing.assert_array_equal(mask, np.isin(phantom.labels, KIDNEYS).astype(np.uint8))
    for bad in ([], "5", [1.5], [None]):
        with pytest.raises(ArchiveError, match="label_values"):
            load_case(case, "liver", modality="CT", label_values=bad)
    with pytest.raises(ArchiveError, match="organ"):
        load_case(case, "pancreas", modality="CT")


def test_default_label_values_table():
    for layout in ("chaos", "dicom", "pairs"):
        assert default_label_values(layout, "liver") == {5}
        assert default_label_values(layout, "spleen") == {1}
        assert default_label_values(layout, "kidney") == {2, 3}
    with pytest.raises(ArchiveError, match="unknown archive layout"):
        default_label_values("auto", "liver")


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    for call in (detect_layout, discover_cases):
        with pytest.raises(ArchiveError, match="no cases found in") as info:
            call(tmp_path)
        message = one_line(info.value)
        assert "empty" in message and all(layout in message for layout in LAYOUTS)


def test_folder_of_junk(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "notes.dcm").write_bytes(b"not really dicom" * 20)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(range(256)))
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 200)
    with pytest.raises(ArchiveError, match="no cases found in") as info:
        discover_cases(tmp_path)
    assert "3 files" in one_line(info.value)
    for layout in LAYOUTS:  # forced: still a clear error
        with pytest.raises(ArchiveError, match=f"no cases found in .* for layout '{layout}'"):
            discover_cases(tmp_path, layout=layout)


def test_bad_root_and_unknown_layout(tmp_path):
    with pytest.raises(ArchiveError, match="no such archive folder"):
        discover_cases(tmp_path / "missing")
    (tmp_path / "file.nii.gz").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="not a folder"):
        detect_layout(tmp_path / "file.nii.gz")
    with pytest.raises(ArchiveError, match="unknown archive layout 'nifti'") as info:
        discover_cases(tmp_path, layout="nifti")
    assert all(layout in one_line(info.value) for layout in LAYOUTS)


def _copy_chaos(archives, tmp_path) -> Path:
    root, _ = archives["chaos"]
    shutil.copytree(root / "MR" / "2", tmp_path / "MR" / "2")
    return tmp_path


def test_chaos_png_count_mismatch(archives, tmp_path):
    root = _copy_chaos(archives, tmp_path)
    ground = root / "MR" / "2" / "T2SPIR" / "Ground"
    sorted(ground.glob("*.png"))[3].unlink()
    (case,) = discover_cases(root)
    with pytest.raises(ArchiveError) as info:
        load_case(case, "liver")
    message = one_line(info.value)
    assert str(ground) in message and f"{SHAPE[2] - 1} ground-truth PNGs" in message
    assert f"but {SHAPE[2]} DICOM files" in message
    image, mask = load_case(case, "liver", with_label=False)
    assert mask is None and image.modality == "MR"


def test_chaos_missing_ground_is_no_label(archives, tmp_path):
    root = _copy_chaos(archives, tmp_path)
    shutil.rmtree(root / "MR" / "2" / "T2SPIR" / "Ground")
    (case,) = discover_cases(root, require_labels=True)
    assert case.label is None
    assert load_case(case, "liver")[1] is None


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png)


def _png(path: Path, array: np.ndarray, color_type: int = 0, filters: bool = True) -> None:
    """An 8-bit PNG with every filter type (rows cycle through 0-4); color type 0 or 2."""
    a = np.asarray(array, dtype=np.int64)
    if color_type == 2:
        a = np.repeat(a[..., None], 3, axis=2).reshape(a.shape[0], -1)
    bpp = 3 if color_type == 2 else 1
    raw, prev = b"", np.zeros(a.shape[1], dtype=np.int64)
    for r, cur in enumerate(a):
        kind = r % 5 if filters else 0
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        raw += bytes([kind]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes()
        prev = cur

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 8, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_chaos_pngs_with_all_filter_types_and_ranges(archives, tmp_path):
    """Real CHAOS PNGs are written by other encoders (filtered rows) with grey values
    anywhere in the README ranges."""
    root = _copy_chaos(archives, tmp_path)
    _, expected = archives["chaos"]
    phantom = expected["chaos-2-t2spir"][1]
    ground = root / "MR" / "2" / "T2SPIR" / "Ground"
    (case,) = discover_cases(root)
    image, before = load_case(case, "kidney")
    rng = np.random.default_rng(0)
    greys = {0: (0, 54), 5: (55, 70), 2: (110, 135), 3: (175, 200), 1: (240, 255)}
    for png in sorted(ground.glob("*.png")):
        codes = _read_png(png)
        out = np.zeros(codes.shape, dtype=np.int64)
        for value, (low, high) in greys.items():
            code = CHAOS_CODES.get(value, 0)
            where = codes == code
            out[where] = rng.integers(low, high + 1, size=int(where.sum()))
        _png(png, out)
    image, after = load_case(case, "kidney")
    np.testing.assert_array_equal(after, before)
    kidneys = np.isin(phantom.labels, KIDNEYS).astype(np.uint8)
    np.testing.assert_array_equal(after, truth_on_grid(kidneys, phantom.affine, image))


def test_chaos_bad_png_is_a_one_line_error_naming_it(archives, tmp_path):
    root = _copy_chaos(archives, tmp_path)
    ground = root / "MR" / "2" / "T2SPIR" / "Ground"
    pngs = sorted(ground.glob("*.png"))
    (case,) = discover_cases(root)
    _png(pngs[0], np.zeros((SHAPE[1], SHAPE[0]), dtype=np.uint8), color_type=2)
    with pytest.raises(ArchiveError, match=re.escape(str(pngs[0]))) as info:
        load_case(case, "liver")
    one_line(info.value)
    _png(pngs[0], np.zeros((SHAPE[0], SHAPE[1]), dtype=np.uint8))  # transposed shape
    wrong_shape = rf"{re.escape(pngs[0].name)}: {SHAPE[0]}x{SHAPE[1]} pixels"
    with pytest.raises(ArchiveError, match=wrong_shape):
        load_case(case, "liver")
    pngs[0].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ArchiveError, match=re.escape(str(pngs[0]))) as info:
        load_case(case, "liver")
    one_line(info.value)


def test_corrupt_nifti_is_listed_but_fails_to_load(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root, tmp_path / "archive")
    bad = tmp_path / "archive" / "case_0004" / "image.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    cases = discover_cases(tmp_path / "archive")
    assert [c.case_id for c in cases] == ["case_0003", "case_0004"]
    with pytest.raises(VolumeReadError, match=re.escape(str(bad))) as info:
        load_case(cases[1], "liver", modality="CT")
    one_line(info.value)
    load_case(cases[0], "liver", modality="CT")  # the other case is fine
    bad_label = tmp_path / "archive" / "case_0003" / "labels.nii.gz"
    bad_label.write_bytes(b"garbage")
    with pytest.raises(VolumeReadError, match=re.escape(str(bad_label))):
        load_case(cases[0], "liver", modality="CT")
    assert load_case(cases[0], "liver", modality="CT", with_label=False)[1] is None


def test_corrupt_dicom_is_listed_but_fails_to_load(archives, tmp_path):
    root, _ = archives["dicom"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    victim = sorted((tmp_path / "case_0003" / "dicom").glob("*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:400])
    (case,) = discover_cases(tmp_path)
    with pytest.raises(VolumeReadError, match=re.escape(victim.name)) as info:
        load_case(case, "liver")
    one_line(info.value)


def test_missing_files_after_discovery(archives, tmp_path):
    root, _ = archives["pairs"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    (case,) = discover_cases(tmp_path)
    (tmp_path / "case_0003" / "labels.nii.gz").unlink()
    with pytest.raises(VolumeReadError, match="no such label file"):
        load_case(case, "liver", modality="CT")
    with pytest.raises(ArchiveError, match="no such label"):
        source_files(case)
    shutil.rmtree(tmp_path / "case_0003")
    with pytest.raises(VolumeReadError, match="no such file"):
        load_case(case, "liver", modality="CT")


# ----------------------------------------------------------------------------------------------
# Case ids, records, checksums
# ----------------------------------------------------------------------------------------------


def test_colliding_ids_are_made_unique(archives, tmp_path):
    root, _ = archives["pairs"]
    for name in ("Case A", "Case_A", "case_a"):
        shutil.copytree(root / "case_0003", tmp_path / name)
    cases = discover_cases(tmp_path)
    ids = [c.case_id for c in cases]
    assert len({i.lower() for i in ids}) == 3
    assert all(SAFE_ID.match(i) for i in ids)
    assert all(c.patient_id == c.case_id for c in cases)
    assert discover_cases(tmp_path) == cases  # deterministic


def test_case_record_round_trip(archives):
    for layout in LAYOUTS:
        root, _ = archives[layout]
        for case in discover_cases(root):
            assert Case.from_dict(case.to_dict()) == case
            assert pickle.loads(pickle.dumps(case)) == case
    with pytest.raises(ArchiveError, match="layout"):
        Case("x", "x", "nifti", Path("x.nii.gz"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_source_files_and_checksum(archives, tmp_path, layout):
    root, _ = archives[layout]
    case = discover_cases(root)[0]
    files = source_files(case)
    assert files == sorted(files) and all(p.is_file() for p in files)
    assert case.label in files or case.label in {p.parent for p in files}
    assert not any(p.name.startswith("._") for p in files)
    first = case_checksum(case)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert case_checksum(case) == first
    # independent of where the archive lies
    copy = tmp_path / "moved"
    shutil.copytree(root, copy, symlinks=True)
    moved = next(c for c in discover_cases(copy) if c.case_id == case.case_id)
    assert case_checksum(moved) == first
    # one byte of one file changed -> another checksum (label, then image)
    for victim in (source_files(moved)[-1], source_files(moved)[0]):
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF
        victim.write_bytes(bytes(data))
        changed = case_checksum(moved)
        assert changed != first
        first = changed


def test_checksum_sees_renamed_and_added_dicom_files(archives, tmp_path):
    root, _ = archives["dicom"]
    shutil.copytree(root / "case_0003", tmp_path / "case_0003")
    (case,) = discover_cases(tmp_path)
    first = case_checksum(case)
    victim = source_files(case)[0]
    victim.rename(victim.with_name("zzz.dcm"))
    assert case_checksum(case) != first


# ----------------------------------------------------------------------------------------------
# Real scans (TotalSegmentator reference files)
# ----------------------------------------------------------------------------------------------


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (a clone without ../shared/data/real)")
    return path


def test_real_ct_dicom_archive():
    root = _need(CT_DIR)
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    if not JPEG2000LosslessDecoder.is_available:
        pytest.skip("no JPEG 2000 decoder for pydicom (Pillow with OpenJPEG) in this environment")
    assert detect_layout(root) == "dicom"
    (case,) = discover_cases(root, require_labels=True)
    assert case.case_id == "totalseg-ct-dicom" and case.patient_id == case.case_id
    assert case.image == root.resolve() / "dicom" or case.image.name == "dicom"
    assert case.label.name == "labels.nii.gz"
    image, mask = load_case(case, "liver")
    assert image.shape == mask.shape == (512, 512, 20)
    assert image.modality == "CT" and mask.dtype == np.uint8
    hu = float(image.array[mask == 1].mean())
    assert 0 < hu < 200, hu  # soft tissue, not air/bone: the mask sits on the liver
    # organ volume round trip: mL from the mask on the DICOM grid == mL counted in the file
    labels = nib.load(root / "labels.nii.gz")
    voxel_ml = float(np.prod(labels.header.get_zooms()[:3])) / 1000.0
    file_ml = int((np.asarray(labels.dataobj) == 5).sum()) * voxel_ml
    mask_ml = int(mask.sum()) * float(np.prod(image.spacing)) / 1000.0
    assert mask_ml == pytest.approx(file_ml, rel=1e-5) and mask_ml > 100
    assert re.fullmatch(r"[0-9a-f]{64}", case_checksum(case))
    assert len(source_files(case)) == 21


def test_real_mr_pairs_archive():
    root = _need(MR_DIR)
    assert detect_layout(root) == "pairs"
    (case,) = discover_cases(root)
    assert case.case_id == "totalseg-mr" and case.label.name == "labels.nii.gz"
    labels = np.asarray(nib.load(root / "labels.nii.gz").dataobj)
    image, kidney = load_case(case, "kidney", modality="MR")
    assert image.shape == kidney.shape == (117, 91, 20)
    assert kidney.sum() == np.isin(labels, (2, 3)).sum() > 0
    assert (labels == 2).sum() > 0 and (labels == 3).sum() > 0
    _, liver = load_case(case, "liver", modality="MR")
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    assert liver.sum() * voxel_ml == pytest.approx((labels == 5).sum() * voxel_ml)
    with pytest.raises(ArchiveError, match="no modality tag"):
        load_case(case, "liver")
