"""``python -m awm_lib propose``: one image, dataset evaluation, clean errors."""

import json

import numpy as np
from PIL import Image

from awm_lib import paths
from awm_lib.cli import main

MIAS = paths.mias_root()


def test_single_image_json_and_png(tmp_path, capsys):
    out = tmp_path / "o.png"
    rc = main(
        [
            "propose",
            str(MIAS / "mdb028.png"),
            "--proposer",
            "blob",
            "--topk",
            "3",
            "--json",
            "--save-png",
            str(out),
        ]
    )
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["rois"]) == 4 and d["rois"][0]["kind"] == "anchor"
    assert all(r["box"][2] <= 1024 and r["box"][0] >= 0 for r in d["rois"])
    im = Image.open(out)
    assert im.size == (1024, 1024) and im.mode == "RGB"


def test_text_output_for_none_pads(capsys):
    assert main(["propose", str(MIAS / "mdb001.png"), "--proposer", "none", "--topk", "2"]) == 0
    text = capsys.readouterr().out
    assert "0 proposals" in text and "2 padded" in text and "anchor" in text


def test_eval_mias_subset_json(capsys):
    rc = main(
        [
            "propose",
            "--dataset",
            "mias",
            "--root",
            str(MIAS),
            "--proposer",
            "oracle",
            "--topk",
            "5",
            "--eval",
            "--json",
            "--limit",
            "6",
            "--no-progress",
        ]
    )
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("recall@1", "recall@5", "recall@10", "n_lesions"):
        assert key in d
    # mdb001..mdb006: mdb001, mdb002, mdb005 (two) hold located lesions; the oracle finds them all
    assert d["n_lesions"] == 4 and d["recall@1"] == 1.0


def test_eval_writes_result_file(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "propose",
                "--dataset",
                "mias",
                "--proposer",
                "random",
                "--eval",
                "--limit",
                "2",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    assert {"command", "seed", "device", "date", "versions", "recall@5", "froc"} <= set(rec)
    assert "recall@1" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["propose", "--eval"]) == 2
    assert "needs --dataset" in capsys.readouterr().err
    blank = tmp_path / "black.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(blank)
    assert main(["propose", str(blank)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m awm_lib propose: error:") and err.count("\n") == 1
    assert main(["propose", str(MIAS / "mdb001.png"), "--proposer", "oracle"]) == 2
