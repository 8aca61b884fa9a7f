"""``train`` / ``evaluate`` / ``predict`` end to end on a small slice of mini-MIAS, and bad input.

One tiny run (a few images per split, one epoch of the smoke preset) is trained
once per module and shared by the tests.
"""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image
from train_helpers import train_argv

from awm_lib.cli import main
from awm_lib.proposals.base import Proposals
from awm_lib.train.metrics import METRIC_KEYS

pytestmark = pytest.mark.filterwarnings("ignore::awm_lib.model.backbone.RandomBackboneWarning")

SMALL = ["data.max_images=10", "optim.epochs=1", "optim.batch_size=4", "eval.n_boot=20"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("AWM_CACHE", str(path))  # preprocessed images and RoIs go to a temporary cache
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mias_root, cache_dir):
    out = tmp_path_factory.mktemp("run")
    # its one-line random-backbone warning: tests/test_cli_user.py
    assert main(train_argv(mias_root, out, sets=SMALL)) == 0
    return out


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_train_writes_a_complete_run_folder(run_dir):
    for name in (
        "config.json",
        "metrics.jsonl",
        "results.json",
        "predictions_val.csv",
        "predictions_test.csv",
    ):
        assert (run_dir / name).is_file(), name
    res = json.loads((run_dir / "results.json").read_text())
    for k in METRIC_KEYS:
        assert set(res[k]) == {"mean", "ci_low", "ci_high"}
    assert res["n_test"] == 10 and res["dataset"] == "mias" and res["fold"] == 0
    assert {"command", "device", "date", "versions", "seeds", "threshold"} <= set(res)
    with open(run_dir / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "label", "prob"] and len(rows) == 10
    assert all(0.0 <= float(r["prob"]) <= 1.0 for r in rows)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["preset"] == "smoke" and cfg["config"]["data"]["max_images"] == 10


def test_evaluate_json_matches_the_training_results(run_dir, mias_root, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run_dir),
                "--dataset",
                "mias",
                "--root",
                str(mias_root),
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    res = _json_out(capsys)
    for k in ("auc", "f1", "sens@fpr0.1", "sens@fpr0.3", "sens@fpr0.5"):
        assert set(res[k]) == {"mean", "ci_low", "ci_high"}
    trained = json.loads((run_dir / "results.json").read_text())
    assert res["auc"] == trained["auc"] and res["threshold"] == trained["threshold"]


def test_predict_json_and_overlay(run_dir, mias_root, tmp_path, capsys):
    png = tmp_path / "overlay.png"
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(mias_root / "mdb028.png"),
                "--checkpoint",
                str(run_dir),
                "--json",
                "--save-png",
                str(png),
            ]
        )
        == 0
    )
    pred = _json_out(capsys)
    assert 0.0 <= pred["probability"] <= 1.0 and pred["fallback_to_anchor"] is False
    assert pred["rois"][0]["kind"] == "anchor" and len(pred["rois"]) == 1 + pred["n_proposals"]
    # the anchor's attention row is a probability distribution over the RoIs
    assert sum(r["weight"] for r in pred["rois"]) == pytest.approx(1.0, abs=1e-3)
    x0, y0, x1, y1 = pred["rois"][0]["box"]  # original 1024 x 1024 pixels
    assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 1024
    assert Image.open(png).size == (1024, 1024)


def test_predict_with_the_oracle_proposer_is_a_clear_error(run_dir, mias_root, capsys):
    capsys.readouterr()
    assert (
        main(["predict", str(mias_root / "mdb028.png"), "--checkpoint", str(run_dir), "--proposer", "oracle"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "oracle" in err[0] and "--proposer blob" in err[0]


def test_predict_without_proposals_falls_back_to_the_anchor(run_dir, mias_root, monkeypatch, capsys):
    import awm_lib.train.inference as inference

    class Nothing:
        name = "nothing"

        def propose(self, image, mask=None):
            return Proposals.empty(image.shape)

    monkeypatch.setattr(inference, "make_proposer", lambda name, **kw: Nothing())
    capsys.readouterr()
    assert main(["predict", str(mias_root / "mdb028.png"), "--checkpoint", str(run_dir), "--json"]) == 0
    out = capsys.readouterr()
    pred = json.loads(out.out)
    assert pred["fallback_to_anchor"] is True and pred["n_proposals"] == 0
    assert [r["kind"] for r in pred["rois"]] == ["anchor"]
    assert "no region" in out.err and "anchor" in out.err


def test_resume_of_a_finished_run_and_a_mismatched_one(run_dir, mias_root, capsys):
    base = [
        "train",
        "--dataset",
        "mias",
        "--root",
        str(mias_root),
        "--preset",
        "smoke",
        "--out",
        str(run_dir),
        "--no-progress",
        "--resume",
    ]
    for s in SMALL:
        base += ["--set", s]
    before = json.loads((run_dir / "results.json").read_text())
    assert main(base) == 0  # nothing left to train: same checkpoint, same metrics
    after = json.loads((run_dir / "results.json").read_text())
    assert after["auc"] == before["auc"] and after["checkpoint"] == before["checkpoint"]
    capsys.readouterr()
    assert main([*base, "--set", "model.d_model=32"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("python -m awm_lib train: error: ")
        and "model.d_model: 64 (checkpoint) vs 32 (now)" in err
    )
    # the refused resume left the run folder as it was
    assert json.loads((run_dir / "config.json").read_text())["config"]["model"]["d_model"] == 64


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["train", "--dataset", "mias", "--preset", "smoke", "--out", "X", "--set", "optim.lr_hed=1"],
            "unknown configuration key 'optim.lr_hed'",
        ),
        (
            ["train", "--dataset", "mias", "--preset", "smoke", "--out", "X", "--set", "optim.epochs=-1"],
            "epochs must be >= 1",
        ),
        (["evaluate", "--checkpoint", "NOPE", "--json"], "no such checkpoint folder"),
        (["predict", "img.png", "--checkpoint", "NOPE"], "no such checkpoint folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m awm_lib {args[0]}: error: ") and message in err[0]


def test_weights_that_do_not_fit_are_a_checkpoint_error(run_dir, mias_root, tmp_path, capsys):
    import shutil

    from awm_lib.train.checkpoint import resolve_checkpoint

    bad = tmp_path / "bad"
    shutil.copytree(resolve_checkpoint(run_dir), bad)
    state = json.loads((bad / "state.json").read_text())
    state["config"]["model"]["d_model"] = 32  # the weights were made with 64
    (bad / "state.json").write_text(json.dumps(state))
    capsys.readouterr()
    # a real image: predict checks the image before it loads the model
    assert main(["predict", str(mias_root / "mdb028.png"), "--checkpoint", str(bad)]) == 2
    assert "weights do not fit this model" in capsys.readouterr().err


def test_load_or_train_loads_a_finished_run_and_refuses_another_config(run_dir):
    import dataclasses

    from awm_lib.errors import CheckpointError
    from awm_lib.train.cached import load_or_train
    from awm_lib.train.config import config_from_dict

    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    res = load_or_train(cfg, run_dir)
    assert res.fit is None  # nothing was trained
    assert res.metrics["auc"] == json.loads((run_dir / "results.json").read_text())["auc"]
    other = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_head=1.0))
    with pytest.raises(CheckpointError, match="optim.lr_head"):
        load_or_train(other, run_dir)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "--checkpoint" in capsys.readouterr().out or command == "train"


def test_full_image_baseline_trains_and_predicts(mias_root, cache_dir, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert main(train_argv(mias_root, out, sets=("arch=full_image", "baseline.long_side=56", *SMALL))) == 0
    assert json.loads((out / "results.json").read_text())["n_test"] == 10
    capsys.readouterr()
    assert main(["predict", str(mias_root / "mdb028.png"), "--checkpoint", str(out), "--json"]) == 0
    pred = _json_out(capsys)
    assert [r["kind"] for r in pred["rois"]] == ["anchor"] and pred["fallback_to_anchor"] is False


def test_the_run_folder_loads_itself_as_a_roi_classifier(run_dir):
    import torch

    from awm_lib.model.roi_transformer import RoIClassifier
    from awm_lib.train.inference import load_run

    model = RoIClassifier.from_pretrained(run_dir)  # the run's best checkpoint, no training code needed
    ref, cfg, step_dir = load_run(run_dir)
    assert (step_dir / "config.json").is_file() and model.cfg == cfg.model and not model.training
    sd, ref_sd = model.state_dict(), ref.state_dict()
    assert sd.keys() == ref_sd.keys() and all(torch.equal(sd[k], ref_sd[k]) for k in sd)
