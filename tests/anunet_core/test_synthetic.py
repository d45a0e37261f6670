"""Tests of anunet_core.synthetic: the phantoms' anatomy and intensities, every archive writer
(read back with nibabel and pydicom directly, not with the project's own readers), and the
scores of predictors that learn nothing (run with ``-s`` to see them)."""

from __future__ import annotations

import json
import struct
import time
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from anunet_core import synthetic as syn
from anunet_core.synthetic import (
    CHAOS_CODES,
    LABELS,
    ORGAN_LABELS,
    TISSUES,
    make_archive,
    make_phantom,
    read_png_gray,
    trivial_predictor_dice,
    write_chaos_mr,
    write_dicom_archive,
    write_dicom_series,
    write_lits,
    write_msd,
    write_nifti_pairs,
    write_png_gray,
)

with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import dicomwrappers

MODALITIES = ["CT", "MR"]
ORGANS = ["liver", "spleen", "kidney"]
# a coarse grid for the writer tests: same field of view, 1/64 of the voxels
SMALL = {"shape": (48, 40, 12), "spacing": (8.0, 9.6, 20.0)}
TISSUE = {name: t for t, name in TISSUES.items()}
LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def cohort() -> dict[str, list[syn.Phantom]]:
    """18 full-size phantoms per modality (MR: the default T2SPIR), made once."""
    return {m: [make_phantom(1000 + i, m) for i in range(18)] for m in MODALITIES}


@pytest.fixture(scope="module")
def small() -> dict[str, list[syn.Phantom]]:
    return {
        m: [make_phantom(s, m, case_id=f"case_{i:04d}", **SMALL) for i, s in enumerate((3, 4))]
        for m in MODALITIES
    }


def _mask(p: syn.Phantom, organ: str) -> np.ndarray:
    return np.isin(p.labels, ORGAN_LABELS[organ])


def _vertebrae(p: syn.Phantom) -> np.ndarray:
    return (p.labels >= LABELS["vertebrae_S1"]) & (p.labels <= LABELS["vertebrae_T1"])


def _world_centroid(p: syn.Phantom, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return (p.affine @ np.append(ijk, 1.0))[:3]


# ---------------------------------------------------------------------------------------------
# phantoms
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_same_arrays_other_seed_differs(modality):
    a, b, c = (make_phantom(s, modality, **SMALL) for s in (5, 5, 6))
    for name in ("image", "labels", "lesions", "tissue", "affine"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_modalities_share_the_anatomy_of_a_seed():
    ct, mr = make_phantom(8, "CT", **SMALL), make_phantom(8, "MR", **SMALL)
    np.testing.assert_array_equal(ct.labels, mr.labels)
    np.testing.assert_array_equal(ct.affine, mr.affine)
    assert not np.array_equal(ct.image, mr.image)


@pytest.mark.parametrize("modality", MODALITIES)
def test_arrays_dtypes_and_geometry(cohort, modality):
    p = cohort[modality][0]
    assert p.image.shape == p.labels.shape == p.lesions.shape == syn.DEFAULT_SHAPE
    assert (p.image.dtype, p.labels.dtype, p.lesions.dtype) == (np.float32, np.uint8, bool)
    np.testing.assert_array_equal(p.image, np.rint(p.image))  # whole numbers: DICOM-exact
    assert nib.aff2axcodes(p.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(p.affine)[:3], syn.DEFAULT_SPACING)
    centre = p.affine @ np.append((np.array(p.shape) - 1) / 2, 1.0)
    np.testing.assert_allclose(centre[:2], 0.0, atol=1e-9)  # field of view on the isocentre
    assert p.spacing == syn.DEFAULT_SPACING
    assert set(np.unique(p.labels)) <= {0, *LABELS.values()}
    assert {1, 2, 3, 5} <= set(np.unique(p.labels))
    if modality == "CT":
        assert p.image.min() >= -1024
    else:
        assert p.image.min() >= 0


def test_ct_intensities_by_tissue(cohort):
    for p in cohort["CT"][:4]:
        img, t = p.image, p.tissue
        assert abs(img[t == TISSUE["air"]].mean() + 1000) < 15
        assert -130 < img[t == TISSUE["fat"]].mean() < -70
        liver = (p.labels == LABELS["liver"]) & ~p.lesions
        assert 100 <= np.median(img[liver]) <= 145
        assert 105 <= np.median(img[p.labels == LABELS["spleen"]]) <= 155
        assert 145 <= np.median(img[t == TISSUE["renal_cortex"]]) <= 205
        assert np.median(img[p.lesions]) < np.median(img[liver]) - 20  # hypodense lesions
        vertebrae = _vertebrae(p)
        assert img[vertebrae].mean() > 300
        assert np.percentile(img[vertebrae], 90) > 500
        assert img[t == TISSUE["lung"]].mean() < -700


def test_liver_and_spleen_overlap_in_hu_across_cases(cohort):
    """Neither organ is always the brighter one: intensity alone cannot tell them apart."""
    diff = [np.median(p.image[p.labels == LABELS["liver"]])
            - np.median(p.image[p.labels == LABELS["spleen"]]) for p in cohort["CT"]]
    assert min(diff) < 0 < max(diff)


@pytest.mark.parametrize("sequence", ["T1", "T2SPIR"])
def test_mr_contrasts_differ_from_ct(sequence):
    for seed in (11, 12, 13):
        p = make_phantom(seed, "MR", sequence=sequence)
        liver = np.median(p.image[(p.labels == LABELS["liver"]) & ~p.lesions])
        spleen = np.median(p.image[p.labels == LABELS["spleen"]])
        fat = np.median(p.image[p.tissue == TISSUE["fat"]])
        if sequence == "T1":
            assert liver > spleen and fat > liver
        else:  # fat suppressed T2: spleen brighter than liver, fat dark
            assert spleen > liver > fat
        assert p.sequence == sequence


def test_liver_on_the_patients_right_kidneys_below(cohort):
    # RAS+: world x grows toward the patient's right, z toward the head
    for p in cohort["CT"]:
        liver = _world_centroid(p, p.labels == LABELS["liver"])
        spleen = _world_centroid(p, p.labels == LABELS["spleen"])
        k_right = _world_centroid(p, p.labels == LABELS["kidney_right"])
        k_left = _world_centroid(p, p.labels == LABELS["kidney_left"])
        spine = _world_centroid(p, _vertebrae(p))
        assert liver[0] > spleen[0] + 50
        assert k_right[0] > spine[0] > k_left[0]
        assert liver[2] > max(k_right[2], k_left[2])
        assert spleen[1] < liver[1] and spine[1] < liver[1]  # spleen, spine posterior


def test_organ_volumes_in_a_plausible_range(cohort):
    ml = float(np.prod(syn.DEFAULT_SPACING)) / 1000.0
    for p in cohort["CT"]:
        volumes = {name: np.count_nonzero(p.labels == LABELS[name]) * ml
                   for name in ("liver", "spleen", "kidney_right", "kidney_left")}
        assert 500 < volumes["liver"] < 2500, volumes
        assert 50 < volumes["spleen"] < 400, volumes
        assert 60 < volumes["kidney_right"] < 250, volumes
        assert 60 < volumes["kidney_left"] < 250, volumes


def test_organs_are_single_pieces_and_lesions_lie_in_the_liver(cohort):
    for p in cohort["CT"][:6]:
        masks = [_mask(p, o) for o in ORGANS]
        assert int(np.sum(masks, axis=0).max()) == 1  # one label per voxel: no overlap
        for name in ("liver", "spleen", "kidney_right", "kidney_left"):
            comp, n = ndimage.label(p.labels == LABELS[name])
            sizes = np.bincount(comp.ravel())[1:]
            assert sizes.max() >= 0.9 * sizes.sum(), (p.case_id, name, n)
        assert p.lesions.any()
        assert not (p.lesions & (p.labels != LABELS["liver"])).any()
        assert 1 <= ndimage.label(p.lesions)[1] <= 3


def test_one_ct_phantom_takes_well_under_a_second():
    make_phantom(0, "CT")  # warm-up
    start = time.process_time()  # CPU time: other processes on the machine do not count
    make_phantom(1, "CT")
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"modality": "PET"}, "modality"),
        ({"modality": "CT", "sequence": "T1"}, "sequence"),
        ({"modality": "MR", "sequence": "FLAIR"}, "sequence"),
        ({"modality": "CT", "shape": (64, 64)}, "shape"),
        ({"modality": "CT", "spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom(0, **kwargs)


# ---------------------------------------------------------------------------------------------
# what a predictor that learns nothing scores
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("modality", MODALITIES)
def test_trivial_predictors_score_badly(cohort, modality, organ):
    phantoms = cohort[modality]
    r = trivial_predictor_dice(phantoms[:12], phantoms[12:], organ)
    print(f"\n{modality} {organ}: all-background {r['all_background']:.3f}, "
          f"fixed blob {r['fixed_blob']:.3f} (tuned {r['fixed_blob_tuned']:.3f} at "
          f"{r['blob_level']:.2f}), intensity window {r['intensity_window']:.3f} "
          f"[{r['window_lo']:.3g}, {r['window_hi']:.3g})")
    assert r["all_background"] == 0.0
    assert r["fixed_blob"] < 0.7
    assert r["fixed_blob_tuned"] < 0.7
    assert r["intensity_window"] < 0.7


def test_trivial_predictor_sanity_on_a_copy():
    """Trained and tested on the same phantom, the fixed blob is the truth itself."""
    p = make_phantom(2, "CT", **SMALL)
    r = trivial_predictor_dice([p], [p], "liver")
    assert r["fixed_blob"] == 1.0 and r["fixed_blob_tuned"] == 1.0
    assert 0.0 < r["intensity_window"] < 1.0
    with pytest.raises(ValueError, match="organ"):
        trivial_predictor_dice([p], [p], "pancreas")


# ---------------------------------------------------------------------------------------------
# NIfTI archives
# ---------------------------------------------------------------------------------------------

def _no_temp_files(root: Path) -> bool:
    return not any(f.name.startswith(".") for f in root.rglob("*"))


@pytest.mark.parametrize("modality", MODALITIES)
def test_write_nifti_pairs_reads_back(tmp_path, small, modality):
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
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("organ", ORGANS)
def test_write_msd_binary_labels(tmp_path, small, organ):
    phantoms = small["CT"]
    images = write_msd(tmp_path, phantoms, organ)
    assert images == [tmp_path / "imagesTr" / f"{p.case_id}.nii.gz" for p in phantoms]
    for p in phantoms:
        lab = nib.load(tmp_path / "labelsTr" / f"{p.case_id}.nii.gz")
        np.testing.assert_array_equal(np.asarray(lab.dataobj), _mask(p, organ).astype(np.uint8))
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
        np.testing.assert_array_equal(seg > 0, p.labels == LABELS["liver"])
        np.testing.assert_array_equal(seg == 2, p.lesions)
        assert set(np.unique(seg)) == {0, 1, 2}
        np.testing.assert_array_equal(nib.load(tmp_path / f"volume-{n}.nii").get_fdata(), p.image)


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------

def _read_series(folder: Path):
    """Slices sorted along the slice normal -> (volume (I, J, K) in stored-grid order, RAS affine,
    datasets). Uses only pydicom and numpy."""
    ds = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]  # no force=True: valid files
    iop = np.array(ds[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ds.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    slope = float(getattr(ds[0], "RescaleSlope", 1.0))
    intercept = float(getattr(ds[0], "RescaleIntercept", 0.0))
    pixels = np.stack([d.pixel_array.astype(np.float64) * slope + intercept for d in ds])
    volume = np.transpose(pixels, (2, 1, 0))  # (K, rows, cols) -> (cols, rows, K)
    row_spacing, col_spacing = (float(v) for v in ds[0].PixelSpacing)
    ipp = [np.array(d.ImagePositionPatient, dtype=float) for d in ds]
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = (ipp[-1] - ipp[0]) / (len(ds) - 1)
    lps[:3, 3] = ipp[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return volume, ras, ds


def _flip(volume: np.ndarray, affine: np.ndarray, standard: bool):
    """The phantom's array and affine on the grid the DICOM stores (i, j reversed if standard)."""
    if not standard:
        return volume, affine
    flipped = affine.copy()
    n_i, n_j = volume.shape[:2]
    flipped[:3, 3] += (n_i - 1) * affine[:3, 0] + (n_j - 1) * affine[:3, 1]
    flipped[:3, :2] *= -1
    return volume[::-1, ::-1], flipped


@pytest.mark.parametrize("standard", [False, True], ids=["phantom-grid", "scanner-orientation"])
@pytest.mark.parametrize("modality", MODALITIES)
def test_dicom_archive_round_trip(tmp_path, small, modality, standard):
    phantoms = small[modality]
    cases = write_dicom_archive(tmp_path, phantoms, standard_orientation=standard)
    assert cases == [tmp_path / p.case_id for p in phantoms]
    series_uids = set()
    for p in phantoms:
        folder = tmp_path / p.case_id / "dicom"
        volume, affine, ds = _read_series(folder)
        expected, expected_affine = _flip(p.image, p.affine, standard)
        np.testing.assert_array_equal(volume, expected)
        np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
        # every voxel lands at the same world position as in the phantom
        ijk = np.array([[0, 0, 0, 1], [5, 7, 3, 1], [47, 39, 11, 1]], dtype=float)
        world = (affine @ ijk.T).T
        back = (np.linalg.inv(p.affine) @ world.T).T
        np.testing.assert_array_equal(p.image[tuple(np.rint(back[:, :3]).astype(int).T)],
                                      volume[tuple(ijk[:, :3].astype(int).T)])
        # labels beside the series, on the phantom's own grid
        lab = nib.load(tmp_path / p.case_id / "labels.nii.gz")
        np.testing.assert_array_equal(np.asarray(lab.dataobj), p.labels)
        np.testing.assert_allclose(lab.affine, p.affine)

        d0 = ds[0]
        sop_class = syn.CT_IMAGE_STORAGE if modality == "CT" else syn.MR_IMAGE_STORAGE
        assert d0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert d0.file_meta.MediaStorageSOPClassUID == sop_class == d0.SOPClassUID
        assert d0.Modality == modality
        assert (d0.Rows, d0.Columns) == (p.shape[1], p.shape[0])
        assert (d0.BitsAllocated, d0.BitsStored, d0.HighBit) == (16, 16, 15)
        assert d0.SamplesPerPixel == 1 and d0.PhotometricInterpretation == "MONOCHROME2"
        assert float(d0.SliceThickness) == p.spacing[2]
        if modality == "CT":
            assert float(d0.RescaleIntercept) == -1024 and float(d0.RescaleSlope) == 1
        assert str(d0.PatientName) == d0.PatientID == f"SYNTH-{p.case_id}"
        assert len({d.SOPInstanceUID for d in ds}) == len(ds) == p.shape[2]
        assert len({(d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID)
                     for d in ds}) == 1
        series_uids.add(d0.SeriesInstanceUID)
        assert {f.name for f in folder.glob("*.dcm")} == {f"{d.SOPInstanceUID}.dcm" for d in ds}
        # file names say nothing about slice order
        by_name = [pydicom.dcmread(f, stop_before_pixels=True)
                   for f in sorted(folder.glob("*.dcm"))]
        z = [float(d.ImagePositionPatient[2]) for d in by_name]
        assert z != sorted(z) and z != sorted(z, reverse=True)
        # head first: instance 1 is the top slice
        assert [int(d.InstanceNumber) for d in ds] == list(range(p.shape[2], 0, -1))
    assert len(series_uids) == len(phantoms)
    assert _no_temp_files(tmp_path)


def test_dicom_geometry_agrees_with_nibabel(tmp_path, small):
    """nibabel's own DICOM wrapper puts each slice where the phantom's affine says."""
    p = small["CT"][0]
    files = write_dicom_series(tmp_path / "series", p)
    for k in (0, 5, p.shape[2] - 1):
        w = dicomwrappers.wrapper_from_file(files[k])
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ w.affine  # wrapper: (row, col, 0) -> LPS mm
        np.testing.assert_allclose(ras[:3, 0], p.affine[:3, 1], atol=1e-6)  # rows run along j
        np.testing.assert_allclose(ras[:3, 1], p.affine[:3, 0], atol=1e-6)  # columns along i
        np.testing.assert_allclose(ras[:3, 3], (p.affine @ [0, 0, k, 1])[:3], atol=1e-6)
        np.testing.assert_array_equal(w.get_data(), p.image[:, :, k].T)  # rescaled to HU


def test_dicom_uids_are_reproducible(tmp_path, small):
    p = small["MR"][0]
    a = write_dicom_series(tmp_path / "a", p)
    b = write_dicom_series(tmp_path / "b", p)
    assert [f.name for f in a] == [f.name for f in b]
    assert a[0].read_bytes() == b[0].read_bytes()


# ---------------------------------------------------------------------------------------------
# PNG and CHAOS
# ---------------------------------------------------------------------------------------------

def _decode_png_filter0(path: Path) -> np.ndarray:
    """A minimal independent PNG reader: 8-bit greyscale, filter type 0 rows only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", data[pos + 8:pos + 18])
            assert (depth, color) == (8, 0)
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:]


def _png_with_filters(a: np.ndarray, filters: list[int]) -> bytes:
    """Encode ``a`` with the given PNG filter type per row (independent encoder for the test)."""
    h, w = a.shape
    x = a.astype(np.int32)
    out = b""
    for r in range(h):
        cur, up = x[r], (x[r - 1] if r else np.zeros(w, np.int32))
        left = np.concatenate([[0], cur[:-1]])
        up_left = np.concatenate([[0], up[:-1]])
        f = filters[r % len(filters)]
        if f == 0:
            pred = np.zeros(w, np.int32)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = up
        elif f == 3:
            pred = (left + up) // 2
        else:
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        out += bytes([f]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b""))


def test_png_round_trip_and_all_filter_types(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(9, 13), dtype=np.uint8)
    write_png_gray(tmp_path / "a.png", a)
    np.testing.assert_array_equal(_decode_png_filter0(tmp_path / "a.png"), a)
    np.testing.assert_array_equal(read_png_gray(tmp_path / "a.png"), a)
    (tmp_path / "f.png").write_bytes(_png_with_filters(a, [0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(read_png_gray(tmp_path / "f.png"), a)
    with pytest.raises(ValueError, match="uint8"):
        write_png_gray(tmp_path / "b.png", a.astype(np.int16))


@pytest.mark.parametrize("standard", [False, True], ids=["phantom-grid", "scanner-orientation"])
def test_chaos_layout_pairs_pngs_with_slices_by_name(tmp_path, small, standard):
    phantoms = small["MR"]
    cases = write_chaos_mr(tmp_path, phantoms, standard_orientation=standard)
    assert cases == [tmp_path / "MR" / str(n) for n in (1, 2)]
    lut = np.zeros(256, dtype=np.uint8)
    for value, code in CHAOS_CODES.items():
        lut[value] = code
    for case, p in zip(cases, phantoms):
        dcms = sorted((case / "T2SPIR" / "DICOM_anon").glob("*.dcm"))
        pngs = sorted((case / "T2SPIR" / "Ground").glob("*.png"))
        assert len(dcms) == len(pngs) == p.shape[2]
        assert dcms[0].name == "IMG-0001-00001.dcm" and pngs[0].name == "IMG-0001-00001.png"
        assert [f.stem for f in dcms] == [f.stem for f in pngs]
        expected_labels, _ = _flip(p.labels, p.affine, standard)
        expected_image, _ = _flip(p.image, p.affine, standard)
        zs = []
        for dcm, png in zip(dcms, pngs):
            d = pydicom.dcmread(dcm)
            zs.append(float(d.ImagePositionPatient[2]))
            k = int(np.argmin(np.abs(p.affine[2, 3] + p.affine[2, 2] * np.arange(p.shape[2])
                                     - zs[-1])))
            np.testing.assert_array_equal(d.pixel_array, expected_image[:, :, k].T)
            ground = _decode_png_filter0(png)
            np.testing.assert_array_equal(ground, lut[expected_labels[:, :, k].T])
            np.testing.assert_array_equal(read_png_gray(png), ground)
        assert zs == sorted(zs, reverse=True)  # names run from the top slice down
        codes = set(np.unique(np.stack([read_png_gray(f) for f in pngs])))
        assert codes == {0, 63, 126, 189, 252}
        assert d.Modality == "MR" and d.file_meta.MediaStorageSOPClassUID == syn.MR_IMAGE_STORAGE
    with pytest.raises(ValueError, match="MR"):
        write_chaos_mr(tmp_path / "ct", small["CT"])


# ---------------------------------------------------------------------------------------------
# make_archive: the entry point of jobs/make_synthetic.py
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fmt, layout, expected",
    [
        ("nifti", None, ["case_0000/image.nii.gz", "case_0000/labels.nii.gz",
                         "case_0001/image.nii.gz", "case_0001/labels.nii.gz"]),
        ("nifti", "msd", ["dataset.json", "imagesTr/case_0000.nii.gz",
                          "imagesTr/case_0001.nii.gz", "labelsTr/case_0000.nii.gz",
                          "labelsTr/case_0001.nii.gz"]),
        ("nifti", "lits", ["segmentation-0.nii", "segmentation-1.nii", "volume-0.nii",
                           "volume-1.nii"]),
        ("dicom", None, ["case_0000/labels.nii.gz", "case_0001/labels.nii.gz"]),
    ],
)
def test_make_archive_layouts(tmp_path, fmt, layout, expected):
    written = make_archive(tmp_path, 2, "CT", fmt, layout, seed=1, **SMALL)
    assert len(written) == 2 and all(w.exists() for w in written)
    files = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*")
                   if f.is_file() and f.suffix != ".dcm")
    assert files == expected
    if fmt == "dicom":
        for case in written:
            assert len(list((case / "dicom").glob("*.dcm"))) == SMALL["shape"][2]
    assert _no_temp_files(tmp_path)


def test_make_archive_chaos_is_mr_only(tmp_path):
    written = make_archive(tmp_path, 1, "MR", "dicom", "chaos", **SMALL)
    assert written == [tmp_path / "MR" / "1"]
    with pytest.raises(ValueError, match="MR"):
        make_archive(tmp_path, 1, "CT", "dicom", "chaos", **SMALL)
    with pytest.raises(ValueError, match="layout"):
        make_archive(tmp_path, 1, "CT", "nifti", "chaos", **SMALL)
    with pytest.raises(ValueError, match="fmt"):
        make_archive(tmp_path, 1, "CT", "png", **SMALL)


def test_make_archive_is_reproducible_and_cases_differ(tmp_path):
    a = make_archive(tmp_path / "a", 2, "MR", "nifti", seed=4, **SMALL)
    b = make_archive(tmp_path / "b", 2, "MR", "nifti", seed=4, **SMALL)
    for x, y in zip(a, b):
        assert (x / "image.nii.gz").read_bytes() == (y / "image.nii.gz").read_bytes()
    img0 = nib.load(a[0] / "image.nii.gz").get_fdata()
    img1 = nib.load(a[1] / "image.nii.gz").get_fdata()
    assert not np.array_equal(img0, img1)
    expected = make_phantom(syn.case_seed(4, 1), "MR", **SMALL)
    np.testing.assert_array_equal(img1, expected.image)
