"""Did pretraining teach the backbone anything? k-NN and linear probes on mini-MIAS RoI crops.

A frozen backbone's features are *probed*: embed each crop once, then see how
well the simplest classifiers separate the classes from those embeddings.

* **k-NN** (DINO's own yardstick): label a crop by the vote of its ``k``
  nearest crops (cosine similarity) among the training folds. It needs no
  training, so it measures the geometry of the feature space directly.
* **Linear probe**: logistic regression on standardised features. It asks
  whether the information is there at all, even if not in the nearest-
  neighbour geometry.

Two tasks on RoI crops, the unit the paper's model sees:

* ``lesion_vs_normal``: crops around the located lesions (centre +- radius,
  made square with a margin) against crops of normal tissue sampled inside
  the breast away from every lesion, with SIDES DRAWN FROM THE LESION CROPS'
  SIDES so that crop size (which a network sees as texture scale) cannot give
  the answer away.
* ``malignant_vs_benign``: the lesion crops only.

Cross-validation folds are made BY WOMAN (mini-MIAS images come in left/right
pairs, ``Sample.patient_id``): two crops of the same woman never sit on both
sides of a split. 95% confidence intervals come from a bootstrap that
resamples women, and the comparison "pretrained minus random init" is a
*paired* bootstrap (the same resampled women for both), which is what tells
us whether the difference is more than noise.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from awm_lib.data.breast import segment_breast
from awm_lib.data.image import load_image
from awm_lib.data.mias import load_mias
from awm_lib.errors import ConfigError
from awm_lib.io_utils import run_record, write_json_atomic
from awm_lib.paths import results_root
from awm_lib.pretrain.augment import to_model_input


@dataclass
class ProbeConfig:
    crop_size: int = 112  # a multiple of the patch size
    margin: float = 0.25  # lesion box = centre +- radius * (1 + margin)
    min_side: int = 32  # original pixels: tiny calcification radii still get some context
    normals_per_image: int = 1
    k: int = 10
    folds: int = 5
    n_boot: int = 1000
    seed: int = 0
    embedding: str = "cls+mean"  # or "cls"
    batch_size: int = 32
    progress: bool = True


@dataclass
class RoICrops:
    crops: torch.Tensor  # (N, 1, S, S) in [0, 1]
    is_lesion: np.ndarray  # (N,) bool
    malignant: np.ndarray  # (N,) int: 1 / 0 for lesions, -1 for normal tissue
    woman: np.ndarray  # (N,) str patient ids
    image_id: np.ndarray  # (N,) str
    boxes: np.ndarray  # (N, 4) xyxy original pixels


def square_box(cx: float, cy: float, side: float, H: int, W: int) -> tuple[float, float, float, float]:
    """A ``side``-square box centred on ``(cx, cy)``, shifted (not shrunk) to lie inside the image."""
    side = min(side, H, W)
    x0 = min(max(cx - side / 2, 0.0), W - side)
    y0 = min(max(cy - side / 2, 0.0), H - side)
    return (x0, y0, x0 + side, y0 + side)


def crop_resize(pixels: np.ndarray, box, size: int) -> torch.Tensor:
    """``pixels[box]`` resized to ``(1, size, size)`` with antialiasing."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    patch = torch.from_numpy(np.ascontiguousarray(pixels[y0:y1, x0:x1], dtype=np.float32))[None, None]
    return F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _overlaps(box, others) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def extract_roi_crops(samples, cfg: ProbeConfig) -> RoICrops:
    """Lesion crops and size-matched normal-tissue crops from mini-MIAS ``Sample`` records."""
    rng = np.random.default_rng(cfg.seed)
    lesion_sides = [
        max(2 * les.radius * (1 + cfg.margin), cfg.min_side)
        for s in samples
        for les in s.lesions
        if les.center is not None
    ]
    if not lesion_sides:
        raise ConfigError(
            "the probe needs images with located lesions (mini-MIAS abnormal rows with a centre)"
        )
    crops, is_lesion, malignant, woman, ids, boxes = [], [], [], [], [], []

    def add(pixels, box, lesion, malig, s):
        crops.append(crop_resize(pixels, box, cfg.crop_size))
        is_lesion.append(lesion)
        malignant.append(malig)
        woman.append(s.patient_id)
        ids.append(s.image_id)
        boxes.append(box)

    for s in tqdm(samples, desc="probe crops", disable=not cfg.progress):
        pixels = load_image(s.path).pixels
        H, W = pixels.shape
        located = [les for les in s.lesions if les.center is not None]
        lesion_boxes = []
        for les in located:
            side = max(2 * les.radius * (1 + cfg.margin), cfg.min_side)
            box = square_box(*les.center, side, H, W)
            lesion_boxes.append(box)
            add(pixels, box, True, int(les.malignant), s)
        if any(les.center is None for les in s.lesions):
            continue  # a lesion somewhere unknown: no crop of this image is safely "normal"
        mask = segment_breast(pixels).full_mask()
        ys, xs = np.nonzero(mask)
        for _ in range(cfg.normals_per_image):
            for _attempt in range(50):
                side = float(rng.choice(lesion_sides))
                j = rng.integers(len(xs))
                box = square_box(float(xs[j]), float(ys[j]), side, H, W)
                if not _overlaps(box, lesion_boxes):
                    add(pixels, box, False, -1, s)
                    break
    return RoICrops(
        torch.stack(crops),
        np.array(is_lesion),
        np.array(malignant),
        np.array(woman),
        np.array(ids),
        np.array(boxes, dtype=np.float64),
    )


@torch.no_grad()
def embed_crops(
    backbone, crops: torch.Tensor, embedding: str = "cls+mean", batch_size: int = 32, progress: bool = False
) -> np.ndarray:
    """``(N, 1, S, S)`` grey crops -> ``(N, D)`` (CLS) or ``(N, 2D)`` (CLS + mean patch) features."""
    backbone.eval()
    dev = next(backbone.parameters()).device
    feats = []
    for i in tqdm(range(0, len(crops), batch_size), desc="embed", disable=not progress):
        x = to_model_input(crops[i : i + batch_size].to(dev))
        h = backbone(pixel_values=x).last_hidden_state  # (b, 1+P, D)
        f = h[:, 0] if embedding == "cls" else torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)
        feats.append(f.float().cpu())
    return torch.cat(feats).numpy()


def _oof_scores(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, method: str, cfg: ProbeConfig
) -> np.ndarray:
    """Out-of-fold P(y = 1) from ``method`` ("knn" or "linear"), folds by group (woman)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros(len(y))
    n_splits = min(cfg.folds, len(np.unique(groups[y == 1])), len(np.unique(groups[y == 0])))
    for train, test in StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=cfg.seed).split(
        X, y, groups
    ):
        if method == "knn":
            Xn = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
            clf = KNeighborsClassifier(
                n_neighbors=min(cfg.k, len(train)), metric="cosine", weights="distance"
            )
            clf.fit(Xn[train], y[train])
            scores[test] = clf.predict_proba(Xn[test])[:, list(clf.classes_).index(1)]
        else:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
            clf.fit(X[train], y[train])
            scores[test] = clf.predict_proba(X[test])[:, 1]
    return scores


def _metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy at 0.5, and ROC-AUC (NaN when a resample has one class).

    Written with numpy (AUC by the Mann-Whitney rank formula) because the
    bootstrap calls it thousands of times.
    """
    from scipy.stats import rankdata

    pred = s >= 0.5
    pos, neg = y == 1, y == 0
    n1, n0 = int(pos.sum()), int(neg.sum())
    out = {"accuracy": float((pred == pos).mean()), "balanced_accuracy": float("nan"), "auc": float("nan")}
    if n1 and n0:
        out["balanced_accuracy"] = float((pred[pos].mean() + (~pred[neg]).mean()) / 2)
        out["auc"] = float((rankdata(s)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    return out


def _women_bootstrap(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Index sets of ``n_boot`` bootstrap resamples of women (all crops of a drawn woman come along)."""
    rng = np.random.default_rng(seed)
    women = np.unique(groups)
    rows = {w: np.nonzero(groups == w)[0] for w in women}
    return [np.concatenate([rows[w] for w in rng.choice(women, len(women))]) for _ in range(n_boot)]


def _ci(values: list[float]) -> list[float]:
    v = np.array([x for x in values if np.isfinite(x)])
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [float("nan")] * 2


def evaluate_task(
    features: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, cfg: ProbeConfig, baseline: str
) -> dict:
    """Probe every model's features on one task; CIs and paired differences against ``baseline``."""
    boots = _women_bootstrap(groups, cfg.n_boot, cfg.seed)
    scores = {
        name: {m: _oof_scores(X, y, groups, m, cfg) for m in ("knn", "linear")}
        for name, X in features.items()
    }
    results, diffs = {}, {}
    for name, per in scores.items():
        results[name] = {}
        for m, s in per.items():
            point = _metrics(y, s)
            boot = [_metrics(y[b], s[b]) for b in boots]
            results[name][m] = {
                k: {"value": v, "ci95": _ci([bm[k] for bm in boot])} for k, v in point.items()
            }
            if name != baseline:
                base = scores[baseline][m]
                bd = [
                    {k: a[k] - c[k] for k in a}
                    for a, c in zip(boot, (_metrics(y[b], base[b]) for b in boots))
                ]
                diffs.setdefault(name, {})[m] = {
                    k: {"value": point[k] - results[baseline][m][k]["value"], "ci95": _ci([d[k] for d in bd])}
                    for k in point
                }
    return {
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "n_women": int(len(np.unique(groups))),
        "majority_rate": float(max(y.mean(), 1 - y.mean())),
        "results": results,
        "difference_vs_random_init": diffs,
    }


def random_init_like(model, seed: int = 0):
    """The same architecture with fresh random weights (the control every probe needs)."""
    from transformers import Dinov2Model

    torch.manual_seed(seed)
    config = copy.deepcopy(model.config)
    return Dinov2Model(config).eval()


def run_probe(
    checkpoints: list[str],
    cfg: ProbeConfig | None = None,
    samples=None,
    out_path: str | Path | None = None,
    command: str | None = None,
) -> dict:
    """Probe ``checkpoints`` (save_pretrained folders) and a random init of the first one's architecture.

    Writes ``out_path`` (default ``results/pretrain_probe.json``) and returns the same dict.

    Explained in the book: chapter 6, *Pretraining our own backbone*
    (``notebooks/06_self_supervised_pretraining.ipynb``).
    """
    from transformers import Dinov2Model

    cfg = cfg or ProbeConfig()
    samples = samples if samples is not None else load_mias()
    rois = extract_roi_crops(samples, cfg)
    models = {}
    for path in checkpoints:
        models[str(path)] = Dinov2Model.from_pretrained(path, dtype=torch.float32).eval()
    first = next(iter(models.values()))
    models = {"random-init": random_init_like(first, cfg.seed), **models}
    features = {
        name: embed_crops(m, rois.crops, cfg.embedding, cfg.batch_size, cfg.progress)
        for name, m in models.items()
    }

    tasks = {}
    y = rois.is_lesion.astype(int)
    tasks["lesion_vs_normal"] = evaluate_task(features, y, rois.woman, cfg, "random-init")
    les = rois.is_lesion
    ym = rois.malignant[les]
    if len(np.unique(ym)) == 2 and min(len(np.unique(rois.woman[les][ym == c])) for c in (0, 1)) >= 2:
        tasks["malignant_vs_benign"] = evaluate_task(
            {k: v[les] for k, v in features.items()}, ym, rois.woman[les], cfg, "random-init"
        )
    else:
        tasks["malignant_vs_benign"] = {
            "skipped": "fewer than two women with malignant or with benign lesions"
        }

    result = run_record(command, seed=cfg.seed)
    result.update(
        probe_config=asdict(cfg),
        data={
            "dataset": "mini-MIAS",
            "images": len(samples),
            "lesion_crops": int(les.sum()),
            "normal_crops": int((~les).sum()),
            "malignant_lesions": int((rois.malignant == 1).sum()),
            "benign_lesions": int((rois.malignant == 0).sum()),
            "women": int(len(np.unique(rois.woman))),
        },
        models={
            name: {"parameters": int(sum(p.numel() for p in m.parameters())), "source": name}
            for name, m in models.items()
        },
        tasks=tasks,
    )
    out_path = Path(out_path) if out_path else results_root() / "pretrain_probe.json"
    write_json_atomic(out_path, result)
    return result


def summary_lines(res: dict) -> list[str]:
    """A few human-readable lines: balanced accuracy with 95% CIs per task, model and probe."""
    lines = [
        f"probe on {res['data']['lesion_crops']} lesion + {res['data']['normal_crops']} normal crops, "
        f"{res['data']['women']} women"
    ]
    for task, t in res["tasks"].items():
        if "skipped" in t:
            lines.append(f"{task}: skipped ({t['skipped']})")
            continue
        lines.append(f"{task} (n={t['n']}, majority rate {t['majority_rate']:.2f}):")
        for name, per in t["results"].items():
            for m, r in per.items():
                b = r["balanced_accuracy"]
                a = r["auc"]
                lines.append(
                    f"  {name:>24s} {m:6s} bal.acc {b['value']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}] "
                    f" AUC {a['value']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"
                )
        for name, per in t["difference_vs_random_init"].items():
            for m, d in per.items():
                b = d["balanced_accuracy"]
                lines.append(
                    f"  {name} - random-init, {m}: bal.acc {b['value']:+.3f} [{b['ci95'][0]:+.3f}, "
                    f"{b['ci95'][1]:+.3f}]"
                )
    return lines
