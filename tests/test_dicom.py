"""DICOM reading: the display pipeline, tags, compression and bad files (files built with pydicom here)."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, RLELossless

from awm_lib.data.dicom import (
    MAMMO_FOR_PRESENTATION,
    NonMammographyWarning,
    read_dicom,
    write_mammo_dicom,
)
from awm_lib.data.image import load_image
from awm_lib.errors import (
    DicomError,
    EmptyFileError,
    EmptyImageError,
    ImageReadError,
    MissingCodecError,
    UnsupportedCompressionError,
)


def ramp(bits: int = 12, shape=(24, 32)) -> np.ndarray:
    """Stored values covering 0 .. 2**bits - 1 (both ends present)."""
    top = 2**bits - 1
    return np.round(np.linspace(0, top, shape[0] * shape[1])).reshape(shape).astype(np.uint16)


def test_round_trip_tags_and_normalisation(tmp_path):
    stored = ramp(12)
    path = write_mammo_dicom(tmp_path / "a.dcm", stored, bits_stored=12, laterality="L", view="CC")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == MAMMO_FOR_PRESENTATION
    assert (ds.Rows, ds.Columns) == stored.shape
    d = read_dicom(path)
    assert np.array_equal(d.raw, stored)
    assert d.pixels.dtype == np.float32 and d.pixels.shape == stored.shape
    np.testing.assert_allclose(d.pixels, stored / 4095.0, atol=1e-6)  # no window: min..max -> 0..1
    assert (d.photometric, d.bits_stored, d.laterality, d.view, d.modality) == (
        "MONOCHROME2",
        12,
        "L",
        "CC",
        "MG",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a.dcm"]  # atomic write leaves no temp file


@pytest.mark.parametrize("bits", [12, 14, 16])
def test_bits_stored_12_to_16(tmp_path, bits):
    stored = ramp(bits)
    d = read_dicom(write_mammo_dicom(tmp_path / "b.dcm", stored, bits_stored=bits))
    assert d.bits_stored == bits
    assert int(d.raw.max()) == 2**bits - 1
    np.testing.assert_allclose(d.pixels, stored / (2**bits - 1), atol=1e-6)


def test_monochrome1_gives_the_same_image_as_monochrome2(tmp_path):
    stored = ramp(14)
    inverted = (2**14 - 1) - stored  # MONOCHROME1: high value = dark
    m2 = read_dicom(write_mammo_dicom(tmp_path / "m2.dcm", stored, bits_stored=14))
    m1 = read_dicom(
        write_mammo_dicom(tmp_path / "m1.dcm", inverted, bits_stored=14, photometric="MONOCHROME1")
    )
    assert m1.photometric == "MONOCHROME1"
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=1e-6)
    assert m1.pixels[0, 0] == 0.0  # stored max in MONOCHROME1 = black background


def test_monochrome1_with_window_matches_monochrome2(tmp_path):
    stored = ramp(12)
    m2 = read_dicom(write_mammo_dicom(tmp_path / "m2.dcm", stored, window=(2000, 1000)))
    m1 = read_dicom(
        write_mammo_dicom(
            tmp_path / "m1.dcm", 4095 - stored, photometric="MONOCHROME1", window=(4095 - 2000, 1000)
        )
    )
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=2e-3)


def test_rescale_slope_intercept_is_applied_to_raw(tmp_path):
    stored = ramp(12)
    d = read_dicom(write_mammo_dicom(tmp_path / "r.dcm", stored, rescale=(2.0, -100.0)))
    np.testing.assert_allclose(d.raw, stored * 2.0 - 100.0)
    np.testing.assert_allclose(d.pixels, stored / 4095.0, atol=1e-6)  # min-max of a linear map


def test_window_linear_exact_hand_computed(tmp_path):
    stored = ramp(12)
    c, w = 1000.0, 400.0
    path = write_mammo_dicom(tmp_path / "w.dcm", stored, window=(c, w), VOILUTFunction="LINEAR_EXACT")
    d = read_dicom(path)
    expected = np.clip((stored - c) / w + 0.5, 0, 1)  # PS3.3 C.11.2.1.3.2, then to [0, 1]
    np.testing.assert_allclose(d.pixels, expected, atol=1e-4)
    assert d.pixels.min() == 0.0 and d.pixels.max() == 1.0  # values outside the window saturate


def test_window_linear_default_and_after_rescale(tmp_path):
    stored = ramp(12)
    c, w = 3000.0, 1001.0  # in rescaled units: raw = 2 * stored
    d = read_dicom(write_mammo_dicom(tmp_path / "w.dcm", stored, rescale=(2.0, 0.0), window=(c, w)))
    raw = 2.0 * stored
    expected = np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1 (LINEAR)
    np.testing.assert_allclose(d.pixels, expected, atol=1e-4)


def test_rle_lossless_round_trip(tmp_path, breast_phantom):
    stored, _ = breast_phantom(64, 48, bits=12)
    path = write_mammo_dicom(tmp_path / "rle.dcm", stored, transfer_syntax=RLELossless)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    d = read_dicom(path)
    assert np.array_equal(d.raw, stored)


def test_jpeg2000_lossless_round_trip(tmp_path, breast_phantom):
    stored, _ = breast_phantom(64, 48, bits=12)
    path = write_mammo_dicom(tmp_path / "j2k.dcm", stored, transfer_syntax=JPEG2000Lossless)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert np.array_equal(read_dicom(path).raw, stored)


def test_missing_codec_names_the_package(tmp_path, breast_phantom, monkeypatch):
    from pydicom.pixels import get_decoder

    stored, _ = breast_phantom(32, 32, bits=12)
    path = write_mammo_dicom(tmp_path / "j2k.dcm", stored, transfer_syntax=JPEG2000Lossless)
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})  # as if no plugin were installed
    with pytest.raises(MissingCodecError) as e:
        read_dicom(path)
    assert "pylibjpeg-openjpeg" in str(e.value) and "awm-lib[jpeg]" in str(e.value)


def test_unsupported_compression(tmp_path):
    from pydicom.encaps import encapsulate

    path = write_mammo_dicom(tmp_path / "u.dcm", ramp(12))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # a video syntax nobody decodes for still images
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnsupportedCompressionError, match="MPEG2"):
        read_dicom(path)


def test_non_mg_modality_warns(tmp_path):
    with pytest.warns(NonMammographyWarning, match="CR"):
        read_dicom(write_mammo_dicom(tmp_path / "cr.dcm", ramp(12), modality="CR"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(write_mammo_dicom(tmp_path / "mg.dcm", ramp(12)))  # MG: no warning


def test_laterality_and_view_fallbacks(tmp_path):
    from pydicom.dataset import Dataset

    path = write_mammo_dicom(tmp_path / "t.dcm", ramp(12), Laterality="R")  # series-level tag only
    assert read_dicom(path).laterality == "R" and read_dicom(path).view is None
    code = Dataset()
    code.CodeMeaning = "medio-lateral oblique"
    path = write_mammo_dicom(tmp_path / "v.dcm", ramp(12), ViewCodeSequence=[code])
    assert read_dicom(path).view == "MLO"


def test_empty_file(tmp_path):
    (tmp_path / "e.dcm").write_bytes(b"")
    with pytest.raises(EmptyFileError):
        read_dicom(tmp_path / "e.dcm")
    with pytest.raises(EmptyFileError):
        load_image(tmp_path / "e.dcm")


def test_truncated_dicom(tmp_path):
    path = write_mammo_dicom(tmp_path / "t.dcm", ramp(12, (64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomError, match="truncated"):
        load_image(path)


def test_dicom_without_pixel_data(tmp_path):
    path = write_mammo_dicom(tmp_path / "n.dcm", ramp(12))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match="no pixel data"):
        load_image(path)


def test_png_renamed_dcm(tmp_path):
    from PIL import Image

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "x.dcm")
    with pytest.raises(ImageReadError, match="PNG"):
        load_image(tmp_path / "x.dcm")


def test_all_black_dicom(tmp_path):
    path = write_mammo_dicom(tmp_path / "k.dcm", np.zeros((16, 16), dtype=np.uint16))
    with pytest.raises(EmptyImageError):
        load_image(path)


def test_load_image_fills_mammo_image(tmp_path):
    path = write_mammo_dicom(tmp_path / "z.dicom", ramp(12), laterality="R", view="MLO")
    im = load_image(path)
    assert (im.format, im.laterality, im.view, im.shape) == ("dicom", "R", "MLO", (24, 32))
    assert im.to_uint8().max() == 255 and im.to_uint8().min() == 0


def test_voi_lut_sequence_is_used(tmp_path):
    from pydicom.dataset import Dataset

    stored = ramp(12)
    table = np.minimum(2 * np.arange(4096), 4095).astype(np.uint16)  # a gain of 2 that saturates
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]  # entries, first stored value mapped, bits per entry
    item.LUTData = table.tobytes()  # OW: how most files store it
    path = write_mammo_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[item], window=(100, 10))
    d = read_dicom(path)  # the LUT wins over the (deliberately absurd) window
    np.testing.assert_allclose(d.pixels, np.minimum(2 * stored, 4095) / 4095.0, atol=1e-6)
