"""Tests of anunet_core.io.dicom on compressed DICOM: real codestreams decode through pylibjpeg.

PACS exports use JPEG Lossless (process 14 SV1, 1.2.840.10008.1.2.4.70), JPEG-LS lossless
(.80) and JPEG 2000 (lossless .90, lossy .91). The reader decodes them with pydicom's pylibjpeg
plugin (``PREFERRED_DECODER``), the runtime dependency the project ships (pylibjpeg with
pylibjpeg-libjpeg and pylibjpeg-openjpeg), whatever else is installed: pydicom would try
python-gdcm first, and gdcm aborts the process on a corrupt codestream. The tests count the
frames the pylibjpeg plugin decodes, so they prove it is the one doing the work. The series are
encoded by real encoders: python-gdcm, pyjpegls and pylibjpeg-openjpeg (pydicom's bundled
files too).
"""

from __future__ import annotations

import collections

import numpy as np
import pydicom
import pytest
from dicom_series import compress_slice, write_oriented_series
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from testkit import REAL_CT_DICOM

from anunet_core.io import VolumeReadError, read_dicom_series
from anunet_core.synthetic.dicom import write_dicom_series
from anunet_core.synthetic.phantom import make_phantom

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
PYLIBJPEG_SYNTAXES = (JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, JPEG_2000)


@pytest.fixture
def pylibjpeg_frames(monkeypatch) -> collections.Counter:
    """A counter of the frames pydicom's pylibjpeg plugin decodes, per transfer syntax (the
    plugin wrapped in place; the other plugins stay, in pydicom's order: gdcm first)."""
    frames: collections.Counter = collections.Counter()
    for uid in PYLIBJPEG_SYNTAXES:
        decoder = get_decoder(uid)
        assert "pylibjpeg" in decoder.available_plugins, f"pylibjpeg cannot decode {uid}"
        plugin = decoder._available["pylibjpeg"]

        def counted(src, runner, _plugin=plugin, _uid=uid):
            frames[_uid] += 1
            return _plugin(src, runner)

        plugins = {name: (counted if name == "pylibjpeg" else func) for name, func in decoder._available.items()}
        monkeypatch.setattr(decoder, "_available", plugins)
    return frames


@pytest.fixture(scope="module")
def phantom():
    """A small CT phantom: 64 x 48 x 8 voxels, whole HU from -1024 up."""
    return make_phantom(3, shape=(64, 48, 8), spacing=(6.0, 7.0, 10.0))


# ----------------------------------------------------------------------------------------------
# pydicom's bundled real files
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, syntax",
    [
        ("MR_small_jpeg_ls_lossless.dcm", JPEG_LS_LOSSLESS),
        ("MR_small_jp2klossless.dcm", JPEG_2000_LOSSLESS),
    ],
    ids=["jpeg-ls-lossless", "jpeg2000-lossless"],
)
def test_bundled_compressed_files_decode_exactly_with_pylibjpeg(pylibjpeg_frames, name, syntax):
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    ds = pydicom.dcmread(get_testdata_file(name))
    assert ds.file_meta.TransferSyntaxUID == syntax
    ds.pixel_array_options(decoding_plugin="pylibjpeg")
    pixels = ds.pixel_array
    assert pixels.dtype == reference.dtype == np.int16
    assert pixels.shape == (64, 64)
    np.testing.assert_array_equal(pixels, reference)
    assert pylibjpeg_frames == {syntax: 1}


# ----------------------------------------------------------------------------------------------
# Synthetic CT series encoded by real encoders, read as a Volume
# ----------------------------------------------------------------------------------------------


def _write_source(folder, phantom, pixel_type: str) -> tuple[np.ndarray, np.ndarray]:
    """The phantom as an uncompressed series: ``"uint16"`` (anunet_core.synthetic: HU + 1024
    with RescaleIntercept -1024, on the phantom's grid) or ``"int16"`` (HU stored signed, no
    rescale, as a scanner's axial series: the phantom's RAS grid reversed in i and j). Returns
    the ``(array, affine)`` a reader must get back."""
    if pixel_type == "uint16":
        write_dicom_series(folder, phantom)
        return phantom.image, phantom.affine
    grid = write_oriented_series(folder, phantom.image, phantom.affine, ("L", "P", "S"))
    return phantom.image[::-1, ::-1], grid


def _compress_series(src, dst, syntax: str, encoder: str, **options) -> None:
    for path in sorted(src.iterdir()):
        compress_slice(path, dst / path.name, syntax, encoder, **options)


@pytest.mark.parametrize("pixel_type", ["uint16", "int16"])
@pytest.mark.parametrize(
    "syntax, encoder",
    [
        (JPEG_LOSSLESS_SV1, "gdcm"),
        (JPEG_LS_LOSSLESS, "gdcm"),
        (JPEG_LS_LOSSLESS, "pyjpegls"),
        (JPEG_2000_LOSSLESS, "gdcm"),
        (JPEG_2000_LOSSLESS, "pylibjpeg"),
        (JPEG_2000, "gdcm"),  # the "lossy" syntax holding a reversible codestream
    ],
    ids=["jpeg-lossless-sv1-gdcm", "jpeg-ls-gdcm", "jpeg-ls-pyjpegls", "jpeg2000-lossless-gdcm",
         "jpeg2000-lossless-openjpeg", "jpeg2000-reversible-gdcm"],
)
def test_lossless_series_reads_as_the_uncompressed_volume(tmp_path, phantom, pylibjpeg_frames, syntax, encoder, pixel_type):
    array, affine = _write_source(tmp_path / "plain", phantom, pixel_type)
    _compress_series(tmp_path / "plain", tmp_path / "packed", syntax, encoder)
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for p in (tmp_path / "packed").iterdir()} == {syntax}
    plain = read_dicom_series(tmp_path / "plain")
    packed = read_dicom_series(tmp_path / "packed")
    assert pylibjpeg_frames == {syntax: 8}
    assert packed.array.dtype == np.float32
    np.testing.assert_array_equal(packed.array, plain.array)
    np.testing.assert_array_equal(packed.affine, plain.affine)
    np.testing.assert_array_equal(plain.array, array)  # and both are the phantom
    np.testing.assert_array_equal(plain.affine, affine)
    assert [ds.SOPInstanceUID for ds in packed.dicom_headers] == [ds.SOPInstanceUID for ds in plain.dicom_headers]


def test_lossy_jpeg2000_series_reads_as_its_decoded_slices(tmp_path, phantom, pylibjpeg_frames):
    _write_source(tmp_path / "plain", phantom, "int16")
    _compress_series(tmp_path / "plain", tmp_path / "packed", JPEG_2000, "pylibjpeg", j2k_cr=[8])
    plain = read_dicom_series(tmp_path / "plain")
    packed = read_dicom_series(tmp_path / "packed")
    assert pylibjpeg_frames == {JPEG_2000: 8}
    np.testing.assert_array_equal(packed.affine, plain.affine)
    # Slice k is exactly that file's decoding by Pillow (placed by position), close to the original.
    by_uid = {}
    for path in (tmp_path / "packed").iterdir():
        ds = pydicom.dcmread(path)
        ds.pixel_array_options(decoding_plugin="pillow")
        by_uid[ds.SOPInstanceUID] = ds.pixel_array.T.astype(np.float32)
    expected = np.stack([by_uid[ds.SOPInstanceUID] for ds in packed.dicom_headers], axis=-1)
    np.testing.assert_array_equal(packed.array, expected)
    error = np.abs(packed.array - plain.array)
    assert 0 < error.mean() < 60  # HU: lossy, 8:1
    assert pylibjpeg_frames == {JPEG_2000: 8}


def test_missing_decoder_is_a_clear_error(tmp_path, phantom, monkeypatch):
    _write_source(tmp_path / "plain", phantom, "uint16")
    _compress_series(tmp_path / "plain", tmp_path / "packed", JPEG_LS_LOSSLESS, "pyjpegls")
    decoder = get_decoder(JPEG_LS_LOSSLESS)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    with pytest.raises(VolumeReadError) as exc:
        read_dicom_series(tmp_path / "packed")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "packed"))
    assert (
        f"unreadable slice (cannot decode pixel data with transfer syntax {JPEG_LS_LOSSLESS} "
        f"(JPEG-LS Lossless Image Compression): "
    ) in message
    assert "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1" in message


def test_real_jpeg2000_ct_decodes_with_pylibjpeg_as_pillow_does(real_ct, pylibjpeg_frames):
    # The real TotalSegmentator series (JPEG 2000 lossless) read by the reader (pylibjpeg) and
    # each file decoded by Pillow's OpenJPEG: the same HU, voxel for voxel.
    image, _, _ = real_ct
    again = read_dicom_series(REAL_CT_DICOM / "dicom")
    assert pylibjpeg_frames == {JPEG_2000_LOSSLESS: 20}
    np.testing.assert_array_equal(again.array, image.array)
    for k, header in enumerate(again.dicom_headers):
        ds = pydicom.dcmread(header.filename)
        ds.pixel_array_options(decoding_plugin="pillow")
        hu = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(again.array[:, :, k], hu.astype(np.float32))
    assert pylibjpeg_frames == {JPEG_2000_LOSSLESS: 20}
