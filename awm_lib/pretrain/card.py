"""The model card: what a saved backbone is, how it was made, and how to load it.

A checkpoint without a card is a rumour. The card records the data, the
number of steps, the seed, the exact command, the device, the date, the
parameter count and file size, and shows the loss curve, so that every figure
in the book can name the weights that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path

from awm_lib.io_utils import atomic_path, write_json_atomic, write_text_atomic


def read_loss_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def plot_loss_curve(log: list[dict], path: str | Path) -> Path | None:
    """Total, DINO and iBOT losses and the teacher's entropies against step, as a PNG."""
    if not log:
        return None
    # A pyplot-free Figure: drawing it never switches the caller's backend
    # (matplotlib.use("Agg") here would silence every later figure in a notebook).
    from matplotlib.figure import Figure

    steps = [r["step"] for r in log]
    fig = Figure(figsize=(9, 3.2))
    ax, ax2 = fig.subplots(1, 2)
    for key in ("loss", "dino", "ibot"):
        if key in log[0]:
            ax.plot(steps, [r[key] for r in log], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("self-distillation loss")
    ax2.plot(steps, [r["teacher_entropy"] for r in log], label="per image")
    ax2.plot(steps, [r["teacher_mean_entropy"] for r in log], label="batch mean")
    ax2.set_xlabel("step")
    ax2.set_ylabel("nats")
    ax2.set_title("teacher entropy (collapse monitor)")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def write_model_card(out_dir: str | Path, meta: dict) -> Path:
    """Write ``README.md``, ``loss_curve.png`` and ``pretrain_config.json`` beside the saved weights."""
    out_dir = Path(out_dir)
    log = read_loss_log(out_dir / "loss_log.jsonl")
    plot_loss_curve(log, out_dir / "loss_curve.png")
    weights = sorted(out_dir.glob("model*.safetensors"))
    size_mb = sum(w.stat().st_size for w in weights) / 1e6
    n_params = sum(_count_params(w) for w in weights)
    files = ", ".join(f"`{w.name}`" for w in weights)
    cfg = meta.get("config", {})
    write_json_atomic(out_dir / "pretrain_config.json", meta)
    last = log[-1] if log else {}
    first = log[0] if log else {}
    arch = json.loads((out_dir / "config.json").read_text())
    sources = ", ".join(f"{k}: {v}" for k, v in meta.get("sources", {}).items())
    loads = [r["load1"] for r in log if r.get("load1") is not None]
    load_line = (
        f"1-minute load average {min(loads):.1f}-{max(loads):.1f} (median "
        f"{sorted(loads)[len(loads) // 2]:.1f}) "
        f"while training with {log[-1].get('threads')} torch threads: other processes shared the CPU"
        if loads
        else "not recorded"
    )
    mias_seen = sorted(i for i in meta.get("image_ids", []) if i.startswith("mdb"))
    hygiene = _hygiene_text(cfg, mias_seen, meta.get("sources", {}))
    text = f"""---
library_name: transformers
tags: [dinov2, self-supervised, mammography, awm_lib]
---

# {out_dir.name}: a DINOv2-architecture ViT/{arch["patch_size"]} pretrained on mammograms

Self-distillation (DINO loss{" + iBOT masked-patch loss" if cfg.get("ibot_weight", 0) > 0 else ""}) with
`awm_lib.pretrain`; these are the weights of the EMA **teacher** backbone.
{"Initialised from `" + str(cfg.get("init_from")) + "` (continued pretraining)." if cfg.get("init_from") else "Initialised at random (no ImageNet or LVD-142M weights)."}

| | |
|---|---|
| architecture | `Dinov2Model`, width {arch["hidden_size"]}, {arch["num_hidden_layers"]} blocks, {arch["num_attention_heads"]} heads, patch {arch["patch_size"]} |
| parameters | {n_params:,} |
| weights | {files}, {size_mb:.1f} MB ({cfg.get("save_dtype", "float32")} storage, loads as float32) |
| data | {meta.get("n_images")} images ({sources}), breast-cropped, long side {cfg.get("long_side")} px |
| views | {cfg.get("n_global")} global x {cfg.get("global_size")} px + {cfg.get("n_local")} local x {cfg.get("local_size")} px, inside the breast mask |
| steps | {meta.get("steps")} x batch {cfg.get("batch_size")} ({meta.get("train_seconds")} s training, {meta.get("wall_seconds")} s wall) |
| loss | {first.get("loss", float("nan")):.3f} (step {first.get("step")}) -> {last.get("loss", float("nan")):.3f} (step {last.get("step")}) |
| seed | {meta.get("seed")} |
| device | {meta.get("device")} |
| machine load | {load_line} |
| date | {meta.get("date")} |
| versions | {", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())} |

Command:

```
{meta.get("command")}
```

![loss curve](loss_curve.png)

## Use

```python
from transformers import Dinov2Model
model = Dinov2Model.from_pretrained("{out_dir.as_posix()}")
```

Inputs: grey mammogram crops in [0, 1], repeated to 3 channels and normalised
with the ImageNet mean/std `(0.485, 0.456, 0.406)` / `(0.229, 0.224, 0.225)`,
sides a multiple of {arch["patch_size"]}. `awm_lib.model.backbone.BackboneConfig(name_or_path=...)`
loads it the same way.

## Which images pretraining saw

{hygiene}

## What it is not

Not DINOv2: no LVD-142M or ImageNet weights were used; this is the DINOv2 *architecture*
trained from random weights by our own DINO + iBOT loop. {"Not trained on a GPU: " + str(meta.get("device")) + "." if "cpu" in str(meta.get("device")).lower() else ""}
Not a substitute for a backbone pretrained at scale on many thousands of mammograms.

## Limits

Trained on {meta.get("n_images")} images for {meta.get("steps")} steps: a small model on little data.
Whether its features help is measured, with confidence intervals, by
`python -m awm_lib pretrain --probe --checkpoint {out_dir.as_posix()}`
(`results/pretrain_probe.json`). Not a medical device.
All hyper-parameters are in `pretrain_config.json`; the loss log is `loss_log.jsonl`.
"""  # noqa: E501 - Markdown table rows are one line each
    path = out_dir / "README.md"
    write_text_atomic(path, text)
    return path


def _hygiene_text(cfg: dict, mias_seen: list[str], sources: dict) -> str:
    """Which real images were in the bank, and which women were kept out of it."""
    if not mias_seen:
        return f"No mini-MIAS image (sources: {', '.join(sources) or 'none recorded'})."
    text = f"{len(mias_seen)} mini-MIAS images: {', '.join(mias_seen)}."
    if cfg.get("mias_half") == "pretrain":
        text = (
            "Only the women of the `pretrain` half of mini-MIAS (`awm_lib.pretrain.split.mias_halves`, split "
            "seed "
            f"{cfg.get('split_seed', 0)}); the `probe` half was never shown to pretraining and is where "
            "every "
            "probe "
            f"figure is computed. " + text
        )
    else:
        text += (" Probes on mini-MIAS with this backbone are on images it has seen (without labels): "
                 "say so beside them.")
    others = {k: v for k, v in sources.items() if k != "mias"}
    return text + (
        "" if not others else " Also: " + ", ".join(f"{v} {k} images" for k, v in others.items()) + "."
    )


def _count_params(weights: Path) -> int:
    from safetensors import safe_open

    n = 0
    with safe_open(str(weights), framework="pt") as f:
        for k in f.keys():
            n += _prod(f.get_slice(k).get_shape())
    return n


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
