"""Tests of anunet_core.synthetic.chaos: the PNG writer (decoded by an independent minimal
reader and by Pillow) and the CHAOS MR layout (PNGs paired with DICOM slices by name)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from archive_builders import write_filtered_png
from PIL import Image

from anunet_core import synthetic as syn
from anunet_core.synthetic import write_chaos_mr, write_png_gray
from anunet_core.vocabulary import CHAOS_GREY


def _read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


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


def test_png_round_trip_and_all_filter_types(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(9, 13), dtype=np.uint8)
    write_png_gray(tmp_path / "a.png", a)
    np.testing.assert_array_equal(_decode_png_filter0(tmp_path / "a.png"), a)
    np.testing.assert_array_equal(_read_png(tmp_path / "a.png"), a)
    # CHAOS's own PNGs use every filter type: the reader the archives use (Pillow) decodes them
    write_filtered_png(tmp_path / "f.png", a)  # rows cycle through filter types 0-4
    np.testing.assert_array_equal(_read_png(tmp_path / "f.png"), a)
    with pytest.raises(ValueError, match="uint8"):
        write_png_gray(tmp_path / "b.png", a.astype(np.int16))


@pytest.mark.parametrize("standard", [False, True], ids=["phantom-grid", "scanner-orientation"])
def test_chaos_layout_pairs_pngs_with_slices_by_name(tmp_path, small, on_stored_grid, standard):
    phantoms = small["MR"]
    cases = write_chaos_mr(tmp_path, phantoms, standard_orientation=standard)
    assert cases == [tmp_path / "MR" / str(n) for n in (1, 2)]
    lut = np.zeros(256, dtype=np.uint8)
    for label, grey, _, _ in CHAOS_GREY:
        lut[label] = grey
    for case, p in zip(cases, phantoms):
        dcms = sorted((case / "T2SPIR" / "DICOM_anon").glob("*.dcm"))
        pngs = sorted((case / "T2SPIR" / "Ground").glob("*.png"))
        assert len(dcms) == len(pngs) == p.shape[2]
        assert dcms[0].name == "IMG-0001-00001.dcm" and pngs[0].name == "IMG-0001-00001.png"
        assert [f.stem for f in dcms] == [f.stem for f in pngs]
        expected_labels, _ = on_stored_grid(p.labels, p.affine, standard)
        expected_image, _ = on_stored_grid(p.image, p.affine, standard)
        zs = []
        for dcm, png in zip(dcms, pngs):
            d = pydicom.dcmread(dcm)
            zs.append(float(d.ImagePositionPatient[2]))
            k = int(np.argmin(np.abs(p.affine[2, 3] + p.affine[2, 2] * np.arange(p.shape[2])
                                     - zs[-1])))
            np.testing.assert_array_equal(d.pixel_array, expected_image[:, :, k].T)
            ground = _decode_png_filter0(png)
            np.testing.assert_array_equal(ground, lut[expected_labels[:, :, k].T])
            np.testing.assert_array_equal(_read_png(png), ground)
        assert zs == sorted(zs, reverse=True)  # names run from the top slice down
        codes = set(np.unique(np.stack([_read_png(f) for f in pngs])))
        assert codes == {0, 63, 126, 189, 252}
        assert d.Modality == "MR" and d.file_meta.MediaStorageSOPClassUID == syn.MR_IMAGE_STORAGE
    with pytest.raises(ValueError, match="MR"):
        write_chaos_mr(tmp_path / "ct", small["CT"])
