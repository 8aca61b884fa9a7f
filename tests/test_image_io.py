"""load_image on PNG / PGM (8 and 16 bit), format sniffing by content, bad raster files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from awm_lib.data.dicom import write_mammo_dicom
from awm_lib.data.image import load_image, sniff_format
from awm_lib.errors import EmptyImageError, ImageReadError


def write_pgm(path, values: np.ndarray, maxval: int) -> None:
    """A binary P5 PGM: 1 byte per value when maxval < 256, else 2 bytes big-endian."""
    h, w = values.shape
    dtype = ">u2" if maxval > 255 else "u1"
    path.write_bytes(f"P5\n# made by a test\n{w} {h}\n{maxval}\n".encode() + values.astype(dtype).tobytes())


def test_png_8bit(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(a).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert (im.format, im.bits_stored, im.photometric, im.shape) == ("png", 8, "MONOCHROME2", (16, 16))
    np.testing.assert_allclose(im.pixels, a / 255.0, atol=1e-7)
    assert np.array_equal(im.to_uint8(), a)


def test_png_16bit_holding_12bit_values(tmp_path):
    a = np.round(np.linspace(0, 4095, 64)).reshape(8, 8).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.bits_stored == 12  # the smallest depth that holds the data, not 16
    np.testing.assert_allclose(im.pixels, a / 4095.0, atol=1e-6)


def test_pgm_8bit(tmp_path):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    write_pgm(tmp_path / "a.pgm", a, 255)
    im = load_image(tmp_path / "a.pgm")
    assert (im.format, im.bits_stored) == ("pgm", 8)
    np.testing.assert_allclose(im.pixels, a / 255.0, atol=1e-7)


def test_pgm_16bit_with_maxval(tmp_path):
    a = np.round(np.linspace(0, 4095, 48)).reshape(6, 8).astype(np.uint16)
    write_pgm(tmp_path / "a.pgm", a, 4095)
    im = load_image(tmp_path / "a.pgm")
    assert im.bits_stored == 12
    np.testing.assert_allclose(im.pixels, a / 4095.0, atol=1e-4)


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    path = write_mammo_dicom(tmp_path / "really_dicom.png", np.arange(64, dtype=np.uint16).reshape(8, 8))
    assert sniff_format(path) == "dicom"
    assert load_image(path).format == "dicom"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "p.tmp", format="PNG")
    assert load_image(tmp_path / "p.tmp").format == "png"


def test_unknown_format(tmp_path):
    (tmp_path / "a.png").write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match="unknown image format"):
        load_image(tmp_path / "a.png")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError):
        load_image(tmp_path / "a.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_all_black_png(tmp_path):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "k.png")
    with pytest.raises(EmptyImageError):
        load_image(tmp_path / "k.png")


def test_mini_mias_png(mias_root):
    im = load_image(mias_root / "mdb001.png")
    assert im.shape == (1024, 1024) and im.bits_stored == 8 and im.format == "png"
    assert 0.0 <= im.pixels.min() and im.pixels.max() <= 1.0
