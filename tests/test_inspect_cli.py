"""``python -m awm_lib inspect``: text / JSON output, --save-png, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from awm_lib.cli import main
from awm_lib.data.dicom import write_mammo_dicom

KEYS = {
    "path",
    "shape",
    "photometric",
    "bits_stored",
    "laterality",
    "view",
    "modality",
    "breast_bbox",
    "flipped",
}


@pytest.fixture
def phantom_dicoms(tmp_path, breast_phantom):
    stored, box = breast_phantom(256, 200, chest_wall="left", bits=14)
    m2 = write_mammo_dicom(tmp_path / "m2.dcm", stored, bits_stored=14, laterality="L", view="MLO")
    m1 = write_mammo_dicom(
        tmp_path / "m1.dcm",
        2**14 - 1 - stored,
        bits_stored=14,
        photometric="MONOCHROME1",
        laterality="L",
        view="MLO",
    )
    return m2, m1, box


def test_json_output(phantom_dicoms, capsys):
    m2, _, (bx0, by0, bx1, by1) = phantom_dicoms
    assert main(["inspect", str(m2), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert KEYS <= set(info)
    assert info["shape"] == [256, 200] and info["bits_stored"] == 14 and info["photometric"] == "MONOCHROME2"
    assert (info["laterality"], info["view"], info["modality"], info["flipped"]) == ("L", "MLO", "MG", False)
    x0, y0, x1, y1 = info["breast_bbox"]
    assert x0 <= bx0 and y0 <= by0 and x1 >= bx1 and y1 >= by1  # contains the breast (with padding)
    assert x1 < 200 - 16  # but not the label


def test_text_output(phantom_dicoms, capsys):
    assert main(["inspect", str(phantom_dicoms[0])]) == 0
    out = capsys.readouterr().out
    assert "breast_bbox" in out and "MONOCHROME2" in out


def test_save_png_is_the_same_for_monochrome1_and_2(phantom_dicoms, tmp_path):
    m2, m1, _ = phantom_dicoms
    assert main(["inspect", str(m2), "--save-png", str(tmp_path / "a.png")]) == 0
    assert main(["inspect", str(m1), "--save-png", str(tmp_path / "b.png")]) == 0
    a, b = np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    assert a.dtype == np.uint8 and a.shape == (256, 200)
    assert np.array_equal(a, b)
    assert a[128, 0] > 100 and a[250, 190] < 30  # bright tissue at the chest wall, dark background


@pytest.mark.parametrize("content", [b"", b"DICM but not really", "png"])
def test_bad_input_one_line_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.dcm"
    if content == "png":
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "x.png")
        (tmp_path / "x.png").rename(path)
    else:
        path.write_bytes(content)
    out_png = tmp_path / "never.png"
    assert main(["inspect", str(path), "--save-png", str(out_png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m awm_lib inspect: error: ") and str(path) in err[0]
    assert not out_png.exists()  # nothing written half-way


def test_all_black_image_exit_2(tmp_path, capsys):
    path = write_mammo_dicom(tmp_path / "black.dcm", np.zeros((32, 32), dtype=np.uint16))
    assert main(["inspect", str(path)]) == 2
    assert "constant" in capsys.readouterr().err


def test_subprocess_no_traceback(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "awm_lib", "inspect", str(path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "empty" in r.stderr and str(path) in r.stderr


@pytest.mark.parametrize("shape", [(1, 300), (6, 6)])
def test_tiny_image_refused_not_given_a_made_up_box(tmp_path, capsys, shape):
    """A one-pixel strip used to get breast_bbox [0, 0, 32, 1] and exit 0."""
    path = tmp_path / "tiny.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small to segment a breast" in err[0] and str(path) in err[0]
