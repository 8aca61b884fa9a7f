"""The prepared GPU run: what ``scripts/gpu_run.sh`` writes to ``$OUT``, and bringing it home.

GPU time is rare and short (one call of at most 10 minutes, 8 files of at most
16 MiB coming back, 64 MiB travelling there), so the GPU figures come from ONE
prepared run. Its output folder (the device tool's ``$OUT``) holds at most::

    manifest.json                 every step: status, seconds, command, note; device, date, budget
    log.txt                       the whole log
    bench.json                    the benchmark's rows (``python -m awm_lib bench --out``)
    awm-dino-gpu.tar.part00, 01   the pretrained save_pretrained folder, tarred, cut in 15 MiB parts
    ch02-gpu.ipynb                chapter 2 executed with the GPU profile (when time was left)

Machine side (called by the script, light imports only)::

    python -m awm_lib.bench.gpu_run init OUT --dry 0 --budget 510 --device NAME --command CMD
    python -m awm_lib.bench.gpu_run step OUT NAME STATUS SECONDS RC --command CMD [--note TEXT]
    python -m awm_lib.bench.gpu_run pack SRC OUT awm-dino-gpu
    python -m awm_lib.bench.gpu_run check-carry .gpu [--no-tree]
    python -m awm_lib.bench.gpu_run merge-bench RUN_BENCH RESULTS   # for chapter 2 on the machine
    python -m awm_lib.bench.gpu_run summary OUT                      # exit 1 if a step failed

Host side: :func:`import_run` (``python -m awm_lib gpu-import DIR``) merges
``bench.json`` into ``results/bench.json``, places the checkpoint under
``checkpoints/awm-dino-gpu/`` with a model card naming the device, date, command
and minutes, and runs the held-out CPU probe on it
(:func:`awm_lib.pretrain.heldout.run_heldout_probe`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from awm_lib.bench.results import RUN_KEY, goals, load_results, merge_runs
from awm_lib.errors import CheckpointError, ConfigError, DataError
from awm_lib.io_utils import atomic_path, write_json_atomic, write_text_atomic
from awm_lib.pretrain.heldout import run_heldout_probe
from awm_lib.pretrain.probe import ProbeConfig

MANIFEST = "manifest.json"
BENCH = "bench.json"
LOG = "log.txt"
CHAPTER2 = "ch02-gpu.ipynb"
CHECKPOINT_STEM = "awm-dino-gpu"
PART_BYTES = 15 * 2**20  # each file that comes back must stay under 16 MiB
MAX_FILES_BACK = 8
MAX_TRAVEL_BYTES = 64 * 2**20  # working tree + carried folders, each way
MAX_CHECKPOINT_BYTES = 25 * 10**6
STEPS = ("bench-model", "bench-data", "pretrain", "chapter2")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- sizes ------------------------------------------------------------------------------------
def folder_bytes(path: str | Path) -> int:
    """Bytes of every regular file under ``path`` (or of the file itself); 0 if it does not exist."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def tree_bytes(root: str | Path = ".") -> int:
    """Bytes of what the device tool sends besides ``carry``: tracked and untracked-not-ignored files."""
    root = Path(root)
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ConfigError(
            f"cannot list the working tree with git ({e}); run from the project's checkout"
        ) from e
    files = {root / f for f in out.decode().split("\0") if f}
    return sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())


def travel_check(
    root: str | Path, carry: list[str], limit: int = MAX_TRAVEL_BYTES, with_tree: bool = True
) -> dict:
    """Sizes of what travels; raises :class:`ConfigError` (naming the biggest part) when over ``limit``."""
    root = Path(root)
    sizes = {c: folder_bytes(root / c) for c in carry}
    tree = tree_bytes(root) if with_tree else 0
    total = tree + sum(sizes.values())
    report = {"tree_bytes": tree, "carry_bytes": sizes, "total_bytes": total, "limit_bytes": limit}
    if total > limit:
        biggest = max(sizes, key=sizes.get) if sizes else "the working tree"
        raise ConfigError(
            f"what travels to the GPU machine is {total / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB "
            f"limit (working tree {tree / 2**20:.1f} MiB, carried "
            f"{', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in sizes.items())}); "
            f"shrink {biggest}"
        )
    return report


# --- the manifest (machine side) ---------------------------------------------------------------
def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no {MANIFEST}: not the output folder of scripts/gpu_run.sh (give the folder the run's files "
            "came back to)",
            path,
        )
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"cannot read the run's manifest ({e})", path) from e


def manifest_init(
    out: str | Path,
    dry: bool,
    budget_s: float,
    device: str,
    command: str,
    commit: str | None = None,
    steps: list[str] | None = None,
    versions: dict | None = None,
) -> dict:
    """Start ``OUT/manifest.json``: the run's device, date, command, budget and planned steps."""
    data = {
        "script": "scripts/gpu_run.sh",
        "dry": bool(dry),
        "device": device,
        "date": _now(),
        "command": command,
        "commit": commit,
        "budget_s": budget_s,
        "planned_steps": list(steps or STEPS),
        "versions": versions or {},
        "steps": {},
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / MANIFEST, data)
    return data


def manifest_step(out: str | Path, name: str, status: str, seconds: float, rc: int | None, command: str = "",
                  note: str = "", **extra) -> dict:
    """Record one finished (or skipped, failed, timed-out) step in ``OUT/manifest.json``."""
    if status not in ("ok", "failed", "timeout", "skipped"):
        raise ConfigError(f"step status {status!r}; use ok, failed, timeout or skipped")
    data = read_manifest(out)
    data["steps"][name] = {
        "status": status,
        "seconds": round(float(seconds), 1),
        "rc": rc,
        "command": command,
        "note": note,
        "finished": _now(),
        **extra,
    }
    data["files"] = sorted(p.name for p in Path(out).iterdir() if p.is_file())
    write_json_atomic(Path(out) / MANIFEST, data)
    return data


# --- a folder as a few files ----------------------------------------------------------------------
def pack_folder(
    src: str | Path, out_dir: str | Path, stem: str = CHECKPOINT_STEM, part_bytes: int = PART_BYTES
) -> list[Path]:
    """Tar ``src`` (uncompressed: safetensors do not compress) and cut it into ``stem.tar.partNN`` files."""
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise DataError("nothing to pack: not a folder", src)
    tmp = out_dir / f".{stem}.tar.tmp"
    with tarfile.open(tmp, "w") as tar:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=p.relative_to(src).as_posix())
    parts = []
    with open(tmp, "rb") as f:
        i = 0
        while chunk := f.read(part_bytes):
            part = out_dir / f"{stem}.tar.part{i:02d}"
            with atomic_path(part) as t:
                t.write_bytes(chunk)
            parts.append(part)
            i += 1
    tmp.unlink()
    return parts


def checkpoint_parts(run_dir: str | Path, stem: str = CHECKPOINT_STEM) -> list[Path]:
    return sorted(Path(run_dir).glob(f"{stem}.tar.part[0-9][0-9]"))


def unpack_parts(parts: list[Path], dest: str | Path) -> Path:
    """Join ``parts`` (in order) and extract them into ``dest`` (replaced atomically)."""
    dest = Path(dest)
    if not parts:
        raise DataError("no checkpoint parts to unpack")
    tmp_dir = dest.with_name(f".{dest.name}.importing")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    joined = tmp_dir.with_suffix(".tar")
    with open(joined, "wb") as out:
        for p in parts:
            out.write(Path(p).read_bytes())
    try:
        with tarfile.open(joined) as tar:
            tar.extractall(tmp_dir, filter="data")  # no absolute paths, links out, or devices
    except (tarfile.TarError, OSError) as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise DataError(
            f"the checkpoint parts do not form a tar file ({e}); was a part left out?", parts[0]
        ) from e
    finally:
        joined.unlink(missing_ok=True)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        tmp_dir.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp_dir.rename(dest)
    return dest


# --- bringing results home (host side) -------------------------------------------------------------
def merge_bench(run_bench: str | Path, results_path: str | Path, run_info: dict) -> list[dict]:
    """Merge the run's benchmark rows into ``results_path``; each row keeps its device, date and command.

    A row that failed on the GPU (``error``) does not replace a measured row of the same (device, config).
    Returns the merged rows.
    """
    new = load_results(run_bench)
    data = load_results(results_path)
    have = {tuple(r.get(k) for k in RUN_KEY) for r in data["runs"] if "error" not in r}
    rows = [{**r, "gpu_run": run_info} for r in new["runs"]
            if "error" not in r or tuple(r.get(k) for k in RUN_KEY) not in have]
    data.update({k: new[k] for k in ("device", "date", "command", "seed", "versions") if k in new})
    data["runs"] = merge_runs(data["runs"], rows)
    data["goals"] = goals(data["runs"])
    write_json_atomic(results_path, data)
    return rows


def card_section(info: dict) -> str:
    """The model card's "GPU run" section (device, date, command, minutes)."""
    return f"""
## GPU run

This checkpoint came back from one prepared GPU run (`scripts/gpu_run.sh`) and was
imported with `{info["import_command"]}`.

| | |
|---|---|
| device | {info["device"]} |
| date | {info["date"]} |
| run command | `{info["run_command"]}` |
| pretraining command | `{info["pretrain_command"]}` |
| minutes | {info["train_minutes"]} of training, {info["step_minutes"]} for the whole step (data, model, saving) |
| commit | {info.get("commit") or "not recorded"} |
| imported | {info["imported"]} |
"""  # noqa: E501 - Markdown table rows are one line each


def place_checkpoint(run_dir: str | Path, manifest: dict, dest: str | Path, import_command: str) -> dict:
    """Unpack the run's checkpoint into ``dest``, check it loads offline, and add the GPU run to its card."""
    parts = checkpoint_parts(run_dir)
    dest = unpack_parts(parts, dest)
    try:
        from transformers import Dinov2Model

        model = Dinov2Model.from_pretrained(str(dest), local_files_only=True)
        n_params = int(sum(p.numel() for p in model.parameters()))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"the imported checkpoint does not load offline ({e})", dest) from e
    meta_path = dest / "pretrain_config.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    step = manifest.get("steps", {}).get("pretrain", {})
    info = {
        "device": meta.get("device") or manifest.get("device"),
        "date": meta.get("date") or manifest.get("date"),
        "run_command": manifest.get("command"),
        "pretrain_command": meta.get("command") or step.get("command"),
        "train_minutes": round(float(meta.get("train_seconds", 0.0)) / 60, 2),
        "step_minutes": round(float(step.get("seconds", 0.0)) / 60, 2),
        "steps": meta.get("steps"),
        "commit": manifest.get("commit"),
        "dry": bool(manifest.get("dry")),
        "parameters": n_params,
        "size_bytes": folder_bytes(dest),
        "imported": _now(),
        "import_command": import_command,
    }
    write_json_atomic(dest / "gpu_run.json", info)
    readme = dest / "README.md"
    text = readme.read_text() if readme.is_file() else f"# {dest.name}\n"
    if "\n## GPU run\n" in text:
        text = text[: text.index("\n## GPU run\n")]
    machine_dir = re.search(r"--out\s+(\S+)", str(info["pretrain_command"] or ""))
    if machine_dir:  # the card was written on the GPU machine: its "how to load / probe" lines point here now
        for fmt in ('from_pretrained("{}")', "--checkpoint {}"):
            text = text.replace(fmt.format(machine_dir.group(1)), fmt.format(dest.as_posix()))
    text = text.replace("results/pretrain_probe.json", "results/pretrain_probe_gpu.json")
    write_text_atomic(readme, text.rstrip("\n") + "\n" + card_section(info))
    return info


def import_run(
    run_dir: str | Path,
    results_dir: str | Path = "results",
    checkpoints_dir: str | Path = "checkpoints",
    probe: bool = True,
    probe_cfg=None,
    probe_samples=None,
    allow_dry: bool = False,
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Bring one GPU run home; returns what was done (also written to ``results_dir/gpu_run/import.json``).

    * ``bench.json`` -> merged into ``results_dir/bench.json``;
    * the checkpoint parts -> ``checkpoints_dir/awm-dino-gpu/`` (+ ``gpu_run.json`` and the card's GPU
    section);
    * the held-out probe of that checkpoint -> ``results_dir/pretrain_probe_gpu.json``;
    * ``manifest.json``, ``log.txt`` and the executed chapter 2 -> ``results_dir/gpu_run/``.

    A dry run's output (``GPU_DRY=1``: tiny CPU settings) is refused unless ``allow_dry``:
    its figures must never land among the measured ones.
    """
    run_dir, results_dir = Path(run_dir), Path(results_dir)
    manifest = read_manifest(run_dir)
    if manifest.get("dry") and not allow_dry:
        raise ConfigError(
            "this is a dry run's output (GPU_DRY=1, tiny CPU settings): its figures are not GPU figures; "
            "import it only into a scratch folder (--allow-dry with --results/--checkpoints)",
            run_dir / MANIFEST,
        )
    command = command or f"python -m awm_lib gpu-import {run_dir}"
    run_info = {
        "script": manifest.get("script"),
        "command": manifest.get("command"),
        "date": manifest.get("date"),
        "commit": manifest.get("commit"),
        "dry": bool(manifest.get("dry")),
    }
    done: dict = {
        "run": str(run_dir),
        "manifest": {k: manifest.get(k) for k in ("device", "date", "command", "dry")},
        "steps": {k: v.get("status") for k, v in manifest.get("steps", {}).items()},
    }

    if (run_dir / BENCH).is_file():
        rows = merge_bench(run_dir / BENCH, results_dir / "bench.json", run_info)
        done["bench"] = {"rows": [r.get("config") for r in rows], "into": str(results_dir / "bench.json")}
    else:
        done["bench"] = "no bench.json in the run"

    if checkpoint_parts(run_dir):
        dest = Path(checkpoints_dir) / CHECKPOINT_STEM
        info = place_checkpoint(run_dir, manifest, dest, command)
        done["checkpoint"] = {
            "path": str(dest),
            **{k: info[k] for k in ("device", "train_minutes", "steps", "size_bytes")},
        }
        if probe:
            cfg = probe_cfg or ProbeConfig(progress=progress)
            out = results_dir / "pretrain_probe_gpu.json"
            res = run_heldout_probe(dest, cfg, samples=probe_samples, out_path=out, command=command)
            done["probe"] = {"into": str(out), "tasks": sorted(res.get("tasks", {}))}
        else:
            done["probe"] = "skipped (--no-probe)"
    else:
        done["checkpoint"] = "no checkpoint in the run (the pretraining step did not finish)"

    keep = results_dir / "gpu_run"
    keep.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, LOG, CHAPTER2):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, keep / name)
    done["kept"] = sorted(p.name for p in keep.iterdir() if p.is_file() and p.name != "import.json")
    write_json_atomic(keep / "import.json", {**done, "command": command, "date": _now()})
    return done


def summary(out: str | Path) -> int:
    """Print one line per step; 1 if a step failed or timed out, else 0."""
    m = read_manifest(out)
    print(f"gpu_run on {m.get('device')} ({m.get('date')}), dry={m.get('dry')}:")
    for name in m.get("planned_steps", STEPS):
        s = m["steps"].get(name)
        if s is None:
            print(f"   {name:12s} not run (the run ended before it)")
        else:
            print(f"   {name:12s} {s['status']:8s} {s['seconds']:6.0f} s  {s.get('note', '')}")
    return int(any(s["status"] in ("failed", "timeout") for s in m["steps"].values()))


# --- the script's helpers ---------------------------------------------------------------------------
def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m awm_lib.bench.gpu_run", description="helpers of scripts/gpu_run.sh"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("init")
    a.add_argument("out")
    a.add_argument("--dry", type=int, default=0)
    a.add_argument("--budget", type=float, required=True)
    a.add_argument("--device", required=True)
    a.add_argument("--command", required=True)
    a.add_argument("--commit", default=None)
    a.add_argument("--steps", default=",".join(STEPS))
    a.add_argument("--versions", default="{}", help="JSON")
    a = sub.add_parser("step")
    for name in ("out", "name", "status", "seconds", "rc"):
        a.add_argument(name)
    a.add_argument("--command", default="")
    a.add_argument("--note", default="")
    a = sub.add_parser("pack")
    a.add_argument("src")
    a.add_argument("out")
    a.add_argument("stem")
    a.add_argument("--max-bytes", type=int, default=MAX_CHECKPOINT_BYTES)
    a = sub.add_parser("merge-bench")
    a.add_argument("run_bench")
    a.add_argument("results")
    a = sub.add_parser("summary")
    a.add_argument("out")
    a = sub.add_parser("check-carry")
    a.add_argument("paths", nargs="+")
    a.add_argument("--root", default=".")
    a.add_argument("--no-tree", action="store_true", help="only the carried folders (on the GPU machine)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "init":
            manifest_init(
                args.out,
                bool(args.dry),
                args.budget,
                args.device,
                args.command,
                args.commit or None,
                [s for s in args.steps.split(",") if s],
                json.loads(args.versions),
            )
        elif args.cmd == "step":
            manifest_step(
                args.out,
                args.name,
                args.status,
                float(args.seconds),
                int(args.rc) if args.rc != "-" else None,
                args.command,
                args.note,
            )
        elif args.cmd == "pack":
            size = folder_bytes(args.src)
            if size > args.max_bytes:
                raise ConfigError(
                    f"the checkpoint is {size / 1e6:.1f} MB, over {args.max_bytes / 1e6:.0f} MB", args.src
                )
            parts = pack_folder(args.src, args.out, args.stem)
            print(
                f"packed {args.src} ({size / 1e6:.1f} MB) into {len(parts)} part(s): "
                f"{' '.join(p.name for p in parts)}"
            )
        elif args.cmd == "merge-bench":
            rows = merge_bench(args.run_bench, args.results, {"script": "scripts/gpu_run.sh", "date": _now()})
            print(f"merged {len(rows)} benchmark row(s) into {args.results}")
        elif args.cmd == "summary":
            return summary(args.out)
        else:
            r = travel_check(args.root, args.paths, with_tree=not args.no_tree)
            print(
                f"travels: {r['total_bytes'] / 2**20:.1f} MiB of {r['limit_bytes'] / 2**20:.0f} MiB "
                f"(tree {r['tree_bytes'] / 2**20:.1f} MiB; "
                + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in r["carry_bytes"].items())
                + ")"
            )
    except (ConfigError, DataError) as e:
        print(f"gpu_run: error: {e.one_line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
