"""The command line as a careful user meets it (issue 16), on real files built here.

Each trial asserts the exit status and the first line of stderr: one line that
names the flag, the key or the file. One tiny mini-MIAS run is trained once for
the module (its stderr kept) and then treated as a finished run folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_helpers import train_argv

from awm_lib.cli import PROG, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["data.max_images=10", "optim.epochs=1", "optim.batch_size=4", "eval.n_boot=20"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit status, stdout, stderr); argparse's exit counts as a status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _first(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[0]


def _png(path: Path, shape=(3, 3), value=None, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    a = (
        rng.integers(0, 256, size=shape, dtype=np.uint8)
        if value is None
        else np.full(shape, value, np.uint8)
    )
    Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("AWM_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mias_root, cache_dir):
    """A finished run folder (trained here, smoke scale) and the stderr of its training."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    code, _, err = _run(train_argv(mias_root, out, sets=TINY))
    assert code == 0, err
    return out, err


# --- 1. never lose a run ----------------------------------------------------------------
def test_train_onto_a_finished_run_refuses_and_leaves_it_byte_identical(finished, mias_root):
    out, _ = finished
    before = {
        p.name: p.read_bytes() for p in (out / "results.json", out / "metrics.jsonl", out / "config.json")
    }
    code, _, err = _run(train_argv(mias_root, out))
    assert code == 2
    assert _first(err) == (
        f"{PROG} train: error: {out}: holds a run; "
        "use --resume to continue or --overwrite to replace it (a finished one: results.json is there)"
    )
    assert len(err.strip().splitlines()) == 1
    assert {p: (out / p).read_bytes() for p in before} == before


def test_train_onto_an_interrupted_run_refuses_before_any_work(tmp_path):
    out = tmp_path / "interrupted"
    (out / "checkpoints" / "step-00000010").mkdir(parents=True)
    (out / "checkpoints" / "step-00000010" / "state.json").write_text("{}")
    code, _, err = _run(["train", "--dataset", "mias", "--preset", "smoke", "--out", str(out)])
    assert code == 2
    assert (
        _first(err)
        == f"{PROG} train: error: {out}: holds a run; use --resume to continue or --overwrite to replace it"
    )
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]


def test_resume_and_overwrite_together_is_one_line(finished):
    out, _ = finished
    code, _, err = _run(
        ["train", "--dataset", "mias", "--preset", "smoke", "--out", str(out), "--resume", "--overwrite"]
    )
    assert code == 2 and "--resume and --overwrite contradict each other" in _first(err)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, cache_dir):
    empty = tmp_path / "not-mias"
    empty.mkdir()  # exists, but holds no mini-MIAS: the data layer fails after the folder was made
    out = tmp_path / "runs" / "failed"
    code, _, err = _run(
        [
            "train",
            "--dataset",
            "mias",
            "--root",
            str(empty),
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 2 and str(empty) in _first(err)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_a_failed_run_in_an_existing_folder_keeps_the_other_files(tmp_path, cache_dir):
    from awm_lib.errors import AWMError
    from awm_lib.train.config import make_config
    from awm_lib.train.experiment import train

    empty = tmp_path / "not-mias"
    empty.mkdir()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(AWMError):
        train(make_config("smoke", TINY, dataset="mias", root=str(empty)), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_pretrain_onto_a_finished_backbone_refuses(tmp_path):
    out = tmp_path / "ssl"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    code, _, err = _run(["pretrain", "--out", str(out), "--preset", "cpu-smoke", "--no-progress"])
    assert code == 2
    assert _first(err) == (
        f"{PROG} pretrain: error: {out}: holds a finished pretraining run; use --overwrite to replace it "
        "(an interrupted one, with train_state.pt, continues by itself)"
    )
    assert (out / "model.safetensors").read_bytes() == b"weights"


def test_a_failed_pretraining_leaves_no_folder(tmp_path):
    out = tmp_path / "ssl-new"
    code, _, err = _run(
        ["pretrain", "--out", str(out), "--init-from", str(tmp_path / "missing"), "--no-progress"]
    )
    assert code == 2 and _first(err).startswith(f"{PROG} pretrain: error: ")
    assert not out.exists()


# --- 2. validate before working ----------------------------------------------------------
@pytest.mark.parametrize(
    "argv,flag,allowed",
    [
        (["propose", "x.png", "--topk", "-3"], "--topk", ">= 0"),
        (["propose", "x.png", "--iou", "2"], "--iou", "in [0.0, 1.0]"),
        (["ablation", "--threads", "0"], "--threads", ">= 1"),
    ],
)
def test_a_bad_number_names_the_flag_and_range_at_once(argv, flag, allowed):
    code, out, err = _run(argv)
    assert code == 2 and out == ""
    line = _first(err)
    assert line.startswith(f"{PROG} {argv[0]}: error: argument {flag}: ") and allowed in line
    assert len(err.strip().splitlines()) == 1


def test_a_bad_config_value_names_the_key_and_range_before_any_work(tmp_path):
    out = tmp_path / "run"
    code, _, err = _run(
        ["train", "--dataset", "mias", "--preset", "smoke", "--out", str(out), "--set", "model.topk=-3"]
    )
    assert code == 2
    assert _first(err) == f"{PROG} train: error: model.topk=-3 is out of range: it must be an integer >= 0"
    assert not out.exists()  # nothing was started


def test_a_missing_root_is_named_before_any_work(tmp_path):
    out = tmp_path / "run"
    code, _, err = _run(
        [
            "train",
            "--dataset",
            "mias",
            "--root",
            str(tmp_path / "nope"),
            "--preset",
            "smoke",
            "--out",
            str(out),
        ]
    )
    assert (
        code == 2
        and _first(err)
        == f"{PROG} train: error: --root {tmp_path / 'nope'}: no such folder (the mias data set's folder)"
    )
    assert not out.exists()


# --- 3. say what the model is -------------------------------------------------------------
def test_predict_json_names_the_backbone_source_and_the_data(finished, mias_root):
    out, _ = finished
    code, stdout, err = _run(["predict", str(mias_root / "mdb028.png"), "--checkpoint", str(out), "--json"])
    assert code == 0, err
    pred = json.loads(stdout)
    assert pred["backbone_source"] == "random init"
    assert (
        pred["training_data"].startswith("mini-MIAS")
        and "at most 10 images per split" in pred["training_data"]
    )
    assert pred["toy"] is True and pred["caution"].startswith(
        "caution: a toy model (its backbone has random weights"
    )
    assert _first(err) == f"{PROG} predict: {pred['caution']}"


def test_predict_text_says_what_the_model_is(finished, mias_root):
    out, _ = finished
    code, stdout, _ = _run(["predict", str(mias_root / "mdb028.png"), "--checkpoint", str(out)])
    lines = stdout.splitlines()
    assert code == 0 and "p(cancer) = " in lines[0]
    assert lines[1].startswith("model: backbone random init (random: micro); trained on mini-MIAS")
    assert lines[2].startswith("caution: a toy model")


def test_predict_refuses_an_image_too_small_to_be_a_mammogram(finished, tmp_path):
    out, _ = finished
    tiny = _png(tmp_path / "noise.png")
    code, stdout, err = _run(["predict", str(tiny), "--checkpoint", str(out)])
    assert code == 2 and stdout == ""
    assert _first(err) == (
        f"{PROG} predict: error: {tiny}: 3x3 pixels is too small to be a mammogram (the short side must "
        "be at least 256 px; a full-field mammogram is thousands of pixels a side)"
    )


def test_describe_model_kinds(tmp_path):
    from awm_lib.train.config import make_config
    from awm_lib.train.provenance import SSL_MARKER, describe_model, source_kind

    ssl = tmp_path / "awm-dino"
    ssl.mkdir()
    (ssl / SSL_MARKER).write_text("{}")
    assert source_kind(str(ssl), True) == "the project's SSL checkpoint"
    assert source_kind("facebook/dinov2-small", True) == "hub weights"
    assert source_kind("facebook/dinov2-small", False) == "random init"
    real = describe_model(
        make_config("default", dataset="mias"),
        {
            "backbone": {
                "name": "facebook/dinov2-small",
                "source": "pretrained: facebook/dinov2-small",
                "pretrained": True,
            }
        },
    )
    assert real["backbone_source"] == "hub weights" and real["toy"] is False and real["caution"] is None
    cached = describe_model(
        make_config("smoke", dataset="mias"),
        {
            "backbone": {  # the feature cache's record
                "name": str(ssl),
                "kind": "local",
                "weights": "sha256:0123",
                "pretrained": True,
            }
        },
    )
    assert cached["backbone_source"] == "the project's SSL checkpoint" and cached["caution"] is None
    frozen_random = describe_model(
        make_config("smoke", dataset="mias"),
        {
            "backbone": {
                "name": "random:small:0",
                "kind": "random",
                "weights": "random",
                "pretrained": False,
            }
        },
    )
    assert (
        frozen_random["backbone_source"] == "random init" and "random weights" in frozen_random["caution"]
    )
    synth = describe_model(make_config("smoke", dataset="synthetic"), None)
    assert synth["toy"] and "synthetic images" in synth["caution"] and "random weights" in synth["caution"]


# --- 4. paths -------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["inspect", "predict", "propose"])
def test_a_directory_given_as_an_image_says_so(command, finished, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    argv = [command, str(folder)] + (["--checkpoint", str(finished[0])] if command == "predict" else [])
    code, _, err = _run(argv)
    assert code == 2
    assert (
        _first(err)
        == f"{PROG} {command}: error: {folder}: is a directory; give one image file (DICOM, PNG or PGM)"
    )


def test_save_png_creates_a_missing_folder_says_so_and_prints_the_path(tmp_path, breast_phantom):
    pixels, _ = breast_phantom(height=300, width=240, bits=8)
    src = tmp_path / "phantom.png"
    Image.fromarray(pixels).save(src)
    target = tmp_path / "new" / "deeper" / "view.png"
    code, stdout, err = _run(["inspect", str(src), "--save-png", str(target)])
    assert code == 0
    assert _first(err) == f"{PROG} inspect: created the folder {target.parent} for --save-png"
    assert f"saved_png    {target}" in stdout.splitlines()
    assert Image.open(target).size == (240, 300)


@pytest.mark.parametrize(
    "name,message", [("adir", "is a directory; give a file name"), ("x.jpg", "give a name ending in .png")]
)
def test_save_png_refuses_a_folder_or_another_format_before_any_work(name, message, tmp_path):
    (tmp_path / "adir").mkdir()
    code, _, err = _run(["inspect", str(tmp_path / "missing.dcm"), "--save-png", str(tmp_path / name)])
    assert code == 2
    assert _first(err).startswith(
        f"{PROG} inspect: error: --save-png {tmp_path / name}: "
    ) and message in _first(err)


def test_no_breast_found_names_the_file(tmp_path):
    a = np.zeros((300, 300), np.uint8)
    a[10:14, 10:14] = 255  # a speck: the brightest region is far too small to be a breast
    path = tmp_path / "speck.png"
    Image.fromarray(a).save(path)
    code, _, err = _run(["inspect", str(path)])
    assert code == 2
    assert (
        _first(err) == f"{PROG} inspect: error: {path}: no breast found (the brightest region is too small)"
    )


# --- 5. quiet, useful output ----------------------------------------------------------------
def test_each_warning_is_one_line_once_without_a_source_path(finished):
    _, err = finished
    lines = err.strip().splitlines()
    random_bb = [ln for ln in lines if "RANDOM BACKBONE" in ln]
    assert len(random_bb) == 1 and random_bb[0].startswith(f"{PROG} train: warning: RANDOM BACKBONE")
    assert all(ln.startswith(f"{PROG} train: warning: ") for ln in lines), lines
    assert not [ln for ln in lines if re.search(r"\.py:\d+", ln)], "a warning shows a source path"


def test_no_progress_bar_when_the_cache_already_holds_everything(tmp_path, mias_root, capsys):
    from awm_lib.data.cache import PreprocessCache

    cache = PreprocessCache(tmp_path / "c", long_side=128)
    paths = [mias_root / "mdb001.png"]
    cache.warm(paths, progress=False)
    capsys.readouterr()
    cache.warm(paths, progress=True)  # nothing left to do
    assert capsys.readouterr().err == ""


def test_version():
    from awm_lib import __version__

    code, out, _ = _run(["--version"])
    assert code == 0 and out.strip() == f"{PROG} (awm-lib) {__version__}"


def _subparsers():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help_and_shows_its_default():
    missing = []
    for name, p in _subparsers().items():
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            where = f"{name} {'/'.join(a.option_strings) or a.dest}"
            if not (a.help or "").strip():
                missing.append(f"{where}: no help")
                continue
            d = a.default
            if (
                a.option_strings
                and d is not None
                and d is not False
                and not (isinstance(d, (list, str)) and not d)
            ):
                shown = p.formatter_class(p.prog)._get_help_string(a) % {"default": d}
                if "default" not in shown.lower():
                    missing.append(f"{where}: default {d!r} not shown")
    assert not missing, missing


@pytest.mark.parametrize(
    "command,flags",
    [("propose", ("--proposer", "--border", "--seed")), ("ablation", ("--out", "--runs-dir"))],
)
def test_the_options_the_issue_named_explain_themselves(command, flags):
    code, out, _ = _run([command, "--help"])
    assert code == 0
    text = " ".join(out.split())
    for flag in flags:
        m = re.search(re.escape(flag) + r" \S+ (.*?)\(default: [^)]*\)", text)
        assert m and len(m.group(1).strip()) > 10, f"{command} {flag}"


def test_bench_list_is_in_plain_words():
    code, out, _ = _run(["bench", "--list"])
    assert code == 0 and out.startswith("Configurations (run one with --config NAME")
    assert "fast/device/train" not in out and "batch=" not in out
    assert "RoI classifier, ViT-B/14, 5 RoIs + anchor, 448-px crops" in out and "input: " in out


def test_one_program_name_in_every_message():
    offenders = []
    for path in (ROOT / "awm_lib").rglob("*.py"):
        text = path.read_text()
        for pattern in ("`awm train`", '"awm: ', "'awm: "):
            if pattern in text:
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders, offenders


def test_grounding_dino_advice_is_something_the_cli_can_do(tmp_path):
    from awm_lib.errors import ProposalError
    from awm_lib.proposals.gdino import GroundingDinoProposer

    with pytest.raises(ProposalError) as e:
        GroundingDinoProposer(model=str(tmp_path / "no-such-model"))._load()
    msg = e.value.one_line()
    assert (
        "local_files_only" not in msg
        and "--model DIR" in msg
        and msg.startswith(str(tmp_path / "no-such-model"))
    )
    with pytest.raises(ProposalError) as e:  # a hub id, offline and not cached
        GroundingDinoProposer(model="no-such-org/no-such-grounding-dino")._load()
    msg = e.value.one_line()
    assert "local_files_only" not in msg and "--model DIR" in msg
    assert "huggingface-cli download no-such-org/no-such-grounding-dino --local-dir DIR" in msg
