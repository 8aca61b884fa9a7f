"""``results/bench.json``: one file, many devices, merged rather than overwritten.

Layout (what :func:`awm_lib.model.cost.load_bench_table` reads)::

    {"device": <last writer>, "date": ..., "command": ..., "versions": ...,
     "runs": [{"device": ..., "config": ..., "date": ..., "command": ..., ...}, ...],
     "goals": {<device>: {...}}}

A run is identified by ``(device, config)``: re-running a configuration on a
device replaces that run and nothing else, so a CPU session and a GPU session
can both write the same file. Every run keeps its own date, command and
versions. ``goals`` summarises, per device, how far the issue's targets are
reached; it is recomputed from the runs at every write and never invents a
figure that was not measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from awm_lib.errors import DataError
from awm_lib.io_utils import write_json_atomic

RUN_KEY = ("device", "config")


def load_results(path: str | Path) -> dict:
    """The results file as a dict (an empty one if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {"runs": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot read benchmark results ({e}); fix or move the file, then re-run", path
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("runs", []), list):
        raise DataError("not a benchmark results file (expected a dict with a 'runs' list)", path)
    data.setdefault("runs", [])
    return data


def merge_runs(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` without the runs that ``new`` replaces (same device and config), then ``new``."""
    replaced = {tuple(r.get(k) for k in RUN_KEY) for r in new}
    return [r for r in old if tuple(r.get(k) for k in RUN_KEY) not in replaced] + list(new)


def write_results(path: str | Path, header: dict, new_runs: list[dict]) -> dict:
    """Merge ``new_runs`` (each stamped with ``header``: device, date, command, versions) into ``path``."""
    data = load_results(path)
    stamped = [
        {**{k: header[k] for k in ("device", "date", "command", "seed", "versions") if k in header}, **r}
        for r in new_runs
    ]
    data.update({k: v for k, v in header.items() if k != "runs"})
    data["runs"] = merge_runs(data["runs"], stamped)
    data["goals"] = goals(data["runs"])
    write_json_atomic(path, data)
    return data


def base_name(config: str) -> str:
    """``"paper@b8+compile=default"`` -> ``"paper"`` (variants share their configuration's goals)."""
    return config.split("@")[0].split("+")[0]


def _best(runs: list[dict], config: str, *keys, better=max):
    """The best measured value at ``keys`` over every variant of ``config`` (never the smoke-scale ones)."""
    values = []
    for r in runs:
        name = str(r.get("config", ""))
        if base_name(name) != config or "@tiny" in name:
            continue
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            values.append(v)
    return better(values) if values else None


def goals(runs: list[dict]) -> dict:
    """Per device, the issue's targets next to the best measured variant (None where not measured)."""
    by_device: dict[str, list] = {}
    for r in runs:
        by_device.setdefault(r.get("device", "?"), []).append(r)
    out: dict[str, dict] = {}
    for device, rs in by_device.items():
        fast = _best(rs, "paper-e2e", "train_end_to_end", "images_per_s")
        ref = _best(rs, "reference", "train_end_to_end", "images_per_s")
        out[device] = {
            "paper_train_mfu": {"target": 0.45, "measured": _best(rs, "paper", "train", "mfu")},
            "end_to_end_fraction_paper": {
                "target": 0.90,
                "measured": _best(rs, "paper-e2e", "train_end_to_end", "fraction_of_model_only"),
            },
            "end_to_end_fraction_default": {
                "target": 0.90,
                "measured": _best(rs, "default-e2e", "train_end_to_end", "fraction_of_model_only"),
            },
            "speedup_vs_reference": {"target": 10.0, "measured": (fast / ref) if fast and ref else None},
            "default_inference_images_per_s": {
                "target": 200.0,
                "measured": _best(rs, "default-infer", "infer_end_to_end", "images_per_s"),
            },
            "default_train_step_s": {
                "target": None,
                "measured": _best(rs, "default", "train", "median_s", better=min),
            },
        }
    return out


# --- what chapter 2 shows: the rows measured on a GPU, never an estimate ---------------------------------
def is_gpu_device(device) -> bool:
    """A GPU row: the device name of :func:`awm_lib.io_utils.device_name` for CUDA (CPU rows start "CPU:")."""
    return bool(device) and not str(device).startswith("CPU")


def _gpu_runs(data: dict) -> list[dict]:
    return [
        r
        for r in data.get("runs", [])
        if is_gpu_device(r.get("device")) and "@tiny" not in str(r.get("config"))
    ]


def gpu_table(path: str | Path):
    """The benchmark rows measured on a GPU, one line per (device, configuration), or None if there are none.

    Train figures are the model-only training step; "end-to-end" is the loader-fed step
    (data-backed configurations: ``paper-e2e``, ``reference``). Each row keeps its date and command.
    """
    import pandas as pd

    runs = _gpu_runs(load_results(path))
    if not runs:
        return None

    def get(r, *keys):
        for k in keys:
            r = r.get(k) if isinstance(r, dict) else None
        return r

    rows = []
    for r in runs:
        mem = get(r, "train", "peak_memory_bytes")
        rows.append(
            {
                "device": r.get("device"),
                "configuration": r.get("config"),
                "batch": r.get("batch_size"),
                "precision": r.get("precision"),
                "tokens / image": r.get("tokens_per_image"),
                "train ms / step": None
                if get(r, "train", "median_s") is None
                else 1e3 * get(r, "train", "median_s"),
                "train images/s": get(r, "train", "images_per_s"),
                "train TFLOP/s": get(r, "train", "tflops"),
                "train MFU": get(r, "train", "mfu"),
                "end-to-end images/s": get(r, "train_end_to_end", "images_per_s"),
                "peak memory GiB": None if mem is None else mem / 2**30,
                "error": r.get("error"),
                "date": r.get("date"),
                "command": r.get("command"),
            }
        )
    table = pd.DataFrame(rows)
    if table["error"].isna().all():
        table = table.drop(columns="error")
    return table.set_index(["device", "configuration"])


def gpu_goals_table(path: str | Path):
    """Per GPU device, the performance goals next to what was measured (None where not measured), or None."""
    import pandas as pd

    runs = _gpu_runs(load_results(path))
    if not runs:
        return None
    rows = []
    for device, g in goals(runs).items():
        for name, v in g.items():
            rows.append({"device": device, "goal": name, "target": v["target"], "measured": v["measured"]})
    return pd.DataFrame(rows).set_index(["device", "goal"])
