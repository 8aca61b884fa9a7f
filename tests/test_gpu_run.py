"""The prepared GPU run: `GPU_DRY=1 bash scripts/gpu_run.sh` runs every step at tiny settings on the
CPU (so the script cannot rot while no GPU is lent), what it returns fits the device tool's limits,
and `python -m awm_lib gpu-import` brings it home: bench rows merged, checkpoint placed with its card,
held-out probe run. A dry run's figures never reach the project's results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from awm_lib.bench import gpu_run
from awm_lib.cli import main
from awm_lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_run.sh"
STEPS = ["bench-model", "bench-data", "pretrain", "chapter2"]
BENCH_CONFIGS = [
    "full-518",
    "full-1036",
    "full-2072",
    "full-3514",
    "paper-b1",
    "paper",
    "default-b1",
    "default",
    "reference",
    "paper-e2e",
]


def _run(out: Path, work: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_DRY", "GPU_STEPS", "GPU_BUDGET_S")}
    e.update(OUT=str(out), GPU_WORK=str(work), PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """One full dry run (a generous budget: speed is the benchmark README's business, not a test's)."""
    base = tmp_path_factory.mktemp("gpu-dry")
    out, work = base / "out", base / "work"
    proc = _run(out, work, GPU_DRY="1", GPU_BUDGET_S="900")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out, work, proc.stdout


@pytest.mark.slow
def test_dry_run_runs_every_step_and_returns_what_the_device_tool_can_carry(dry):
    out, _, log = dry
    m = json.loads((out / "manifest.json").read_text())
    assert (
        m["dry"] is True
        and m["device"].startswith("CPU")
        and m["command"] == "GPU_DRY=1 bash scripts/gpu_run.sh"
    )
    assert {k: v["status"] for k, v in m["steps"].items()} == dict.fromkeys(STEPS, "ok")
    assert all(v["command"] and v["seconds"] >= 0 for v in m["steps"].values())
    assert (
        "awm_lib pretrain" in m["steps"]["pretrain"]["command"]
        and "bank_path=" in m["steps"]["pretrain"]["command"]
    )
    # at most 8 plain files of < 16 MiB, plain names, no folders (the device tool's limits)
    files = list(out.iterdir())
    assert all(p.is_file() for p in files) and len(files) <= gpu_run.MAX_FILES_BACK
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.stat().st_size < 16 * 2**20 for p in files)
    assert {"manifest.json", "log.txt", "bench.json", "ch02-gpu.ipynb", "awm-dino-gpu.tar.part00"} <= {
        p.name for p in files
    }
    # every benchmark configuration of the issue, measured (tiny), each row with device, date, command
    runs = json.loads((out / "bench.json").read_text())["runs"]
    assert sorted(r["config"] for r in runs) == sorted(f"{c}@tiny" for c in BENCH_CONFIGS)
    assert all("error" not in r and r["device"] and r["date"] and r["command"] for r in runs)
    ref = next(r for r in runs if r["config"] == "reference@tiny")
    assert ref["train_end_to_end"]["images_per_s"] > 0 and ref["data_source"]["n_images"] == 4
    # chapter 2 ran with the GPU profile and said "pending": a CPU row is never shown as a GPU figure
    nb = json.loads((out / "ch02-gpu.ipynb").read_text())
    text = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert "GPU measurement pending" in text and nb["metadata"]["papermill"]["parameters"]["dpi"] == 120
    assert text.count("image/png") >= 4  # its figures are in the executed copy (inline backend, not Agg)
    assert "== gpu_run: done" in (out / "log.txt").read_text() and "gpu_run on CPU" in log


def test_import_refuses_a_dry_run_into_the_real_results(dry, tmp_path, capsys):
    out, _, _ = dry
    with pytest.raises(ConfigError, match="dry run"):
        gpu_run.import_run(out, tmp_path / "results", tmp_path / "checkpoints", probe=False)
    assert main(["gpu-import", str(out), "--allow-dry"]) == 2  # --allow-dry into results/: refused too
    assert "give --results DIR" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_gpu_import_merges_bench_places_the_checkpoint_with_its_card(dry, tmp_path):
    from transformers import Dinov2Model

    out, _, _ = dry
    results, ckpts = tmp_path / "results", tmp_path / "checkpoints"
    results.mkdir()
    kept = {
        "device": "CPU: earlier",
        "config": "default@b2",
        "date": "2026-01-01T00:00:00Z",
        "command": "earlier",
    }
    (results / "bench.json").write_text(json.dumps({"runs": [kept]}))
    rc = main(["gpu-import", str(out), "--allow-dry", "--results", str(results), "--checkpoints", str(ckpts),
               "--no-probe", "--no-progress"])
    assert rc == 0
    runs = json.loads((results / "bench.json").read_text())["runs"]
    assert kept in runs and len(runs) == 1 + len(BENCH_CONFIGS)  # merged, the earlier row kept
    assert all(
        r["gpu_run"]["script"] == "scripts/gpu_run.sh" and r["command"].startswith("python -m awm_lib bench")
        for r in runs
        if r is not kept and r != kept
    )

    dest = ckpts / "awm-dino-gpu"
    model = Dinov2Model.from_pretrained(str(dest), local_files_only=True)  # loads offline
    assert model.config.hidden_size == 32
    info = json.loads((dest / "gpu_run.json").read_text())
    card = (dest / "README.md").read_text()
    assert card.count("## GPU run") == 1 and info["device"] in card and info["date"] in card
    assert "bash scripts/gpu_run.sh" in card and "minutes" in card and info["steps"] == 3
    assert (
        f'from_pretrained("{dest.as_posix()}")' in card
    )  # the machine's folder no longer appears where to load from
    assert (dest / "loss_log.jsonl").read_text().count("\n") == 3  # the loss log came along
    assert sorted(p.name for p in (results / "gpu_run").iterdir()) == [
        "ch02-gpu.ipynb",
        "import.json",
        "log.txt",
        "manifest.json",
    ]
    # importing again replaces, never duplicates
    assert (
        main(
            [
                "gpu-import",
                str(out),
                "--allow-dry",
                "--results",
                str(results),
                "--checkpoints",
                str(ckpts),
                "--no-probe",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(json.loads((results / "bench.json").read_text())["runs"]) == 1 + len(BENCH_CONFIGS)
    assert (dest / "README.md").read_text().count("## GPU run") == 1


def test_gpu_import_runs_the_heldout_probe_on_the_checkpoint(dry, tmp_path):
    from awm_lib.data.mias import load_mias
    from awm_lib.pretrain.probe import ProbeConfig

    out, _, _ = dry
    from awm_lib.pretrain.split import samples_of_half

    # a few women of each kind keep the probe fast; all from the probe half, which pretraining never saw
    samples = samples_of_half(load_mias(), "probe")
    women = sorted(
        {s.patient_id for s in samples if s.label and all(les.center is not None for les in s.lesions)}
    )[:6]
    women += sorted({s.patient_id for s in samples if s.lesions and not s.label})[:4]
    women += sorted({s.patient_id for s in samples if not s.lesions})[:4]
    few = [s for s in samples if s.patient_id in women]
    done = gpu_run.import_run(
        out,
        tmp_path / "results",
        tmp_path / "checkpoints",
        allow_dry=True,
        probe_samples=few,
        probe_cfg=ProbeConfig(n_boot=20, progress=False),
        progress=False,
    )
    res = json.loads((tmp_path / "results" / "pretrain_probe_gpu.json").read_text())
    assert done["probe"]["into"].endswith("pretrain_probe_gpu.json") and res["checkpoint"].endswith(
        "awm-dino-gpu"
    )
    assert "lesion_vs_normal" in res["tasks"] and res["hygiene"]["probe_images_seen_by_pretraining"] == []
    assert "awm-dino-gpu" in res["models"] and "random-init" in res["models"]


def test_a_cut_short_run_says_what_it_skipped_and_a_failed_step_fails_the_run(dry, tmp_path):
    _, work, _ = dry
    out = tmp_path / "out"
    proc = _run(
        out, work, GPU_DRY="1", GPU_BUDGET_S="0"
    )  # no time at all: every step skipped, the run still reports
    assert proc.returncode == 0, proc.stdout[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert {k: v["status"] for k, v in m["steps"].items()} == dict.fromkeys(STEPS, "skipped")
    assert all("left" in v["note"] for v in m["steps"].values())

    broken = tmp_path / "work"
    (broken / "carry").mkdir(parents=True)
    (broken / "carry" / "mias512-pretrain.npz").write_bytes(b"not a bank")
    proc = _run(tmp_path / "out2", broken, GPU_DRY="1", GPU_STEPS="pretrain")
    assert proc.returncode == 1
    m = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert m["steps"]["pretrain"]["status"] == "failed" and m["planned_steps"] == ["pretrain"]
    assert not list((tmp_path / "out2").glob("awm-dino-gpu.tar.part*"))


def test_the_gpu_run_needs_out_and_the_carried_folder(tmp_path):
    e = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_DRY")}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "OUT is not set" in proc.stderr
    proc = _run(tmp_path / "out", tmp_path / "work", GPU_CARRY=str(tmp_path / "missing"))
    assert proc.returncode == 2 and "gpu_prepare.sh" in proc.stdout


def test_pack_and_unpack_a_folder_in_parts(tmp_path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(5000))
    (src / "sub" / "README.md").write_text("card")
    parts = gpu_run.pack_folder(src, tmp_path, "x", part_bytes=2048)
    assert [p.name for p in parts][:2] == ["x.tar.part00", "x.tar.part01"] and all(
        p.stat().st_size <= 2048 for p in parts
    )
    dest = gpu_run.unpack_parts(gpu_run.checkpoint_parts(tmp_path, "x"), tmp_path / "home" / "ckpt")
    assert (dest / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert (dest / "sub" / "README.md").read_text() == "card"
    with pytest.raises(Exception, match="tar"):
        gpu_run.unpack_parts(parts[:1], tmp_path / "torn")  # a part left out is a clear error


def test_travel_check_names_the_limit(tmp_path):
    (tmp_path / "carry").mkdir()
    (tmp_path / "carry" / "bank.npz").write_bytes(b"x" * 3000)
    assert gpu_run.travel_check(tmp_path, ["carry"], with_tree=False)["total_bytes"] == 3000
    with pytest.raises(ConfigError, match="over the .* limit.*shrink carry"):
        gpu_run.travel_check(tmp_path, ["carry"], limit=1000, with_tree=False)


def test_a_failed_gpu_row_does_not_replace_a_measured_one(tmp_path):
    measured = {"device": "NVIDIA H200", "config": "paper", "train": {"mfu": 0.5}}
    (tmp_path / "results.json").write_text(json.dumps({"runs": [measured]}))
    (tmp_path / "run.json").write_text(json.dumps({"runs": [
        {"device": "NVIDIA H200", "config": "paper", "error": "OutOfMemoryError"},
        {"device": "NVIDIA H200", "config": "default", "train": {"mfu": 0.3}}]}))
    gpu_run.merge_bench(tmp_path / "run.json", tmp_path / "results.json", {"script": "scripts/gpu_run.sh"})
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["config"] for r in data["runs"]] == ["paper", "default"] and "error" not in data["runs"][0]
    assert data["goals"]["NVIDIA H200"]["paper_train_mfu"]["measured"] == 0.5
