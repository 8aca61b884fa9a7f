"""The ablation panel: pick settings, see the precomputed result, or train it live.

::

    from awm_lib.book import results, widgets
    panel = widgets.AblationPanel(results.load_ablation(missing_ok=True))
    panel.widget            # display it in a notebook

Eight dropdowns choose the settings of one configuration (proposer, top-k, crop
size, position code, pooling, loss, contrastive weight, backbone init). When the
precomputed grid (``results/ablation.json``) has that configuration, the panel
shows its metrics with 95% intervals, its ROC curve and an example overlay;
otherwise it says so and offers **Train (short run)**, which trains that
configuration for a few steps (smoke-sized: a tiny random ViT on a subset of
mini-MIAS) with a progress bar and a loss curve that updates as it trains.

Everything the panel shows lives in ``HTML`` and ``Image`` widgets, whose state
is plain text and PNG bytes: the static book embeds that state, so the panel is
drawn there too — frozen at its first state, which is why each chapter shows a
table of the whole grid beside it.

Who trains is a parameter (``trainer``): the default is :func:`train_short_run`;
the book's CPU build passes :func:`train_frozen_run`, which retrains the chosen
configuration on the cached RoI tokens of a frozen backbone (the ``frozen`` preset,
the same cache as the ``cpu-frozen`` grid) in seconds; tests pass a stub. A trainer is ``trainer(settings,
out_dir) -> results`` where
``results`` has the metric entries of a ``results.json`` (``{"auc": {"mean", ...}}``)
and, while it runs, it appends training records to ``out_dir/metrics.jsonl``
(as :func:`awm_lib.train.loop.fit` does) so the panel can plot the loss.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import ipywidgets as W
import matplotlib.pyplot as plt

from awm_lib.book import results as R
from awm_lib.book.viz import plot_curves, plot_roc, subplots
from awm_lib.paths import checkpoints_root, project_root
from awm_lib.train.cached import load_or_train
from awm_lib.train.config import make_config
from awm_lib.train.loop import read_log

__all__ = ["DEFAULT_SETTINGS", "DEFAULT_CHOICES", "AblationPanel", "settings_to_overrides", "train_short_run",
           "train_frozen_run", "NOT_IN_GRID", "NO_RESULTS"]

#: The paper's recipe at CPU scale: where the panel starts when the grid is empty.
DEFAULT_SETTINGS = {"proposer": "blob", "topk": 3, "crop_size": 56, "position": "rope2d", "pooling": "anchor",
                    "loss": "bce+repulsive", "contrastive_weight": 0.3, "backbone_init": "random"}
#: Values offered even when the grid lacks them (they can be trained live).
DEFAULT_CHOICES = {
    "proposer": ["blob", "oracle", "random", "none"],
    "topk": [1, 3, 5],
    "crop_size": [56, 112, 224],
    "position": ["none", "sine", "rope2d", "sinecat+rope1d"],
    "pooling": ["anchor", "attention", "mean", "cls"],
    "loss": ["bce", "bce+repulsive", "bce+supcon", "bce+repulsive+supcon"],
    "contrastive_weight": [0.1, 0.3, 1.0],
    "backbone_init": ["random", "ssl", "dinov2"],
}
LABELS = {
    "proposer": "proposer",
    "topk": "top-k",
    "crop_size": "crop size",
    "position": "position code",
    "pooling": "pooling",
    "loss": "loss",
    "contrastive_weight": "contrastive w.",
    "backbone_init": "backbone init",
}
NOT_IN_GRID = "not in the precomputed grid — press Train to run it live"
NO_RESULTS = "no precomputed results yet; run <code>python -m awm_lib ablation</code> to make them"
SSL_CHECKPOINT = "awm-dino-s14"  # checkpoints/<this>: the project's self-supervised backbone
SSL_CPU_CHECKPOINT = "awm-dino-cpu"  # ... and its CPU-pretrained one (the frozen preset's)

Trainer = Callable[[dict, Path], dict]


# =====================================================================================
# The live run: settings -> a smoke-sized training configuration
# =====================================================================================
def settings_to_overrides(settings: Mapping, *, frozen: bool = False) -> list[str]:
    """The ``--set`` overrides (on the ``smoke`` preset, or ``frozen`` with ``frozen=True``)
    that realise one choice of settings.

    ``proposer="none"`` with ``topk=0`` is the full-image ViT baseline (no RoIs at
    all; on cached features: the whole breast at ``crop_size`` through the frozen ViT,
    as the ``cpu-frozen`` grid's baseline); with ``topk > 0`` it is the RoI model with
    the anchor alone. ``loss`` names the terms switched on ("supcon": the hard-negative
    supervised contrastive loss over RoIs); ``contrastive_weight`` is their weight. With
    the reference's position code (``sinecat+rope1d``) the repulsive term acts where the
    reference puts it (the transformer's outputs), as in the grid's ``roi-paper``.
    """
    s = {**DEFAULT_SETTINGS, **settings}
    if frozen and s["proposer"] == "none" and s["topk"] == 0:
        out = ["arch=roi", "data.proposer=none", "model.topk=0", f"model.crop_size={s['crop_size']}",
               f"model.position={s['position']}", f"model.pooling={s['pooling']}"]
    elif s["proposer"] == "none" and s["topk"] == 0:
        out = ["arch=full_image"]
        if s["pooling"] in ("cls", "mean"):
            out.append(f"baseline.pooling={s['pooling']}")
        if s["crop_size"] % 14 == 0:  # the baseline's "crop" is the whole breast at this long side
            out.append(f"baseline.long_side={s['crop_size']}")
    else:
        out = [
            "arch=roi",
            f"data.proposer={s['proposer']}",
            f"model.topk={s['topk']}",
            f"model.crop_size={s['crop_size']}",
            f"model.position={s['position']}",
            f"model.pooling={s['pooling']}",
        ]
        if s["proposer"] in (
            "oracle",
            "random",
        ):  # pad with random boxes: the RoI count must not leak the label
            out.append("data.pad_rois=random")
    w = float(s["contrastive_weight"])
    out += [f"loss.repulsive_weight={w if 'repulsive' in s['loss'] else 0.0}",
            "loss.supcon_weight=0.0", f"loss.roi_supcon_weight={w if 'supcon' in s['loss'] else 0.0}"]
    if "supcon" in s["loss"]:
        out.append("loss.hard_negative_beta=1.0")
    if s["position"] == "sinecat+rope1d" and "repulsive" in s["loss"]:
        out.append("loss.repulsive_on=tokens")
    init = s["backbone_init"]
    if init == "ssl":
        out.append(
            "model.backbone.name_or_path="
            f"{checkpoints_root() / (SSL_CPU_CHECKPOINT if frozen else SSL_CHECKPOINT)}"
        )
    elif init == "dinov2":
        out.append("model.backbone.name_or_path=facebook/dinov2-small")
    elif frozen:  # pinned random ViT-S/14, as in the cpu-frozen grid (never a checkpoint that appears later)
        out.append("model.backbone.name_or_path=none")
    return out


def train_short_run(settings: Mapping, out_dir: Path, *, steps: int = 20, max_images: int = 64,
                    dataset: str = "mias") -> dict:
    """Train ``settings`` for ``steps`` optimizer steps on a small stratified subset, then test.

    Smoke-sized on purpose (a tiny random ViT on 256-px images): it shows the
    machinery running in a minute or two, not a result to compare with the grid.
    A finished run in ``out_dir`` with the same configuration is loaded, not retrained
    (:func:`awm_lib.train.cached.load_or_train`).

    Explained in the book: chapter 7, *Interactive ablations* (``notebooks/07_interactive_ablations.ipynb``).
    """
    overrides = settings_to_overrides(settings) + [
        f"optim.max_steps={steps}", "optim.epochs=1000", "optim.eval_every=" + str(max(steps // 2, 1)),
        f"data.max_images={max_images}", "eval.n_boot=200"]
    cfg = make_config("smoke", overrides, dataset=dataset)
    # "load the result if it exists, else train": the same settings twice train once
    return load_or_train(cfg, out_dir, progress=False, command=f"AblationPanel live run: {overrides}").results


def train_frozen_run(settings: Mapping, out_dir: Path, *, dataset: str = "mias", fold: int = 0, seed: int = 0,
                     n_boot: int = 500, extra: tuple[str, ...] = ()) -> dict:
    """Retrain ``settings`` on cached RoI tokens (the ``frozen`` preset) on one fold, then test.

    The crops are embedded once by the frozen backbone and cached (shared with the
    ``cpu-frozen`` grid, so the book's build and the grid fill one cache); once they
    are, the RoI head trains and is tested in seconds on two CPU cores. The result
    is one fold and one seed, so its interval is wider than the grid's, which pools
    5 folds x 5 seeds.

    Explained in the book: chapter 7, *Interactive ablations* (``notebooks/07_interactive_ablations.ipynb``).
    """
    overrides = settings_to_overrides(settings, frozen=True) + [
        f"data.fold={fold}", f"seed={seed}", f"eval.n_boot={n_boot}", "optim.device=cpu", *extra]
    cfg = make_config("frozen", overrides, dataset=dataset)
    return load_or_train(
        cfg, out_dir, progress=False, command=f"AblationPanel live run (frozen): {overrides}"
    ).results


# =====================================================================================
# The panel
# =====================================================================================
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class AblationPanel:
    """The ablation widget. ``panel.widget`` is what a notebook displays.

    results: the grid (:func:`awm_lib.book.results.load_ablation`), or None when there is none yet.
    dataset: which dataset's records to show (default: the first in the file).
    trainer: who runs the Train button (default :func:`train_short_run`).
    background: train in a thread (a live kernel stays responsive) or block until done (tests).
    total_steps: the progress bar's length (the trainer's number of optimizer steps).
    """

    def __init__(self, results: R.AblationResults | None, *, dataset: str | None = None,
                 trainer: Trainer | None = None, background: bool = True, total_steps: int = 20,
                 initial: Mapping | None = None, runs_dir: str | Path | None = None, poll_s: float = 0.5,
                 train_label: str = "Train (short run)",
                 live_note: str = "a short smoke-sized run: not comparable with the grid"):
        self.results = results
        self.dataset = dataset or (results.datasets[0] if results is not None and results.records else None)
        self.trainer = trainer or train_short_run
        self.background, self.total_steps, self.poll_s = background, total_steps, poll_s
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.live_note = live_note
        self.thread: threading.Thread | None = None
        self.last_run: dict | None = None
        choices = R.setting_choices(results.for_dataset(self.dataset) if results else None, DEFAULT_CHOICES)
        start = {**DEFAULT_SETTINGS, **(initial or self._first_settings())}
        start = {k: start[k] for k in R.SETTING_KEYS}  # records may carry more (e.g. "arch")
        for k, v in start.items():  # the starting value must be one of the options
            if v not in choices[k]:
                choices[k].append(v)
        self.dropdowns = {k: W.Dropdown(options=choices[k], value=start[k], description=LABELS[k],
                                        layout=W.Layout(width="250px"), style={"description_width": "105px"})
                          for k in R.SETTING_KEYS}
        self.status = W.HTML()
        self.metrics = W.HTML()
        self.roc = W.Image(format="png", layout=W.Layout(width="320px"))
        self.overlay = W.Image(format="png", layout=W.Layout(width="300px", margin="0 0 0 8px"))
        self.train_button = W.Button(description=train_label, icon="play", button_style="primary",
                                     layout=W.Layout(width="auto"),
                                     tooltip="train these settings now, on this machine (live kernel only)")
        self.progress = W.IntProgress(value=0, min=0, max=total_steps, description="steps",
                                      layout=W.Layout(width="300px"))
        self.loss_plot = W.Image(
            format="png", layout=W.Layout(width="300px", display="none")
        )  # until a run logs
        self.live_roc = W.Image(
            format="png", layout=W.Layout(width="300px", display="none")
        )  # until a run ends
        self.train_status = W.HTML()
        for d in self.dropdowns.values():
            d.observe(self._on_change, names="value")
        self.train_button.on_click(self._on_train)
        self.widget = self._layout()
        self.update()

    # --- layout ------------------------------------------------------------------------
    def _layout(self) -> W.Widget:
        controls = W.VBox(
            list(self.dropdowns.values()), layout=W.Layout(min_width="270px", margin="0 12px 0 0")
        )
        shown = W.VBox([self.status, self.metrics])
        train = W.VBox([W.HBox([self.train_button, self.progress]), self.train_status,
                        W.HBox([self.loss_plot, self.live_roc])])
        return W.VBox([W.HBox([controls, shown]), W.HBox([self.roc, self.overlay]), train])

    def _first_settings(self) -> dict:
        """Start on the full method (the paper's recipe) if the grid has it, else its first RoI record."""
        recs = self.results.for_dataset(self.dataset) if self.results else []
        full = R.headline_configurations(self.results, self.dataset)[-1:] if recs else []
        pick = [r for r in recs if r["configuration"] in full and r["configuration"] != R.BASELINE]
        roi = [r for r in recs if r["configuration"] != R.BASELINE]
        return dict((pick or roi or recs)[0]["settings"]) if recs else {}

    # --- state -------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        return {k: d.value for k, d in self.dropdowns.items()}

    def set(self, **settings) -> None:
        """Change dropdowns from code (as a reader would by clicking)."""
        for k, v in settings.items():
            self.dropdowns[k].value = v

    @property
    def record(self) -> dict | None:
        return R.find_record(self.results, self.settings, dataset=self.dataset)

    def _on_change(self, _change) -> None:
        self.update()

    def update(self) -> None:
        """Show the precomputed record of the current settings, or say it is not in the grid."""
        rec = self.record
        if self.results is None or not self.results.records:
            self.status.value = f"<b>{NO_RESULTS}</b>. {NOT_IN_GRID}."
        elif rec is None:
            self.status.value = f"<b>{NOT_IN_GRID}</b>."
        else:
            self.status.value = (
                f"<b>{html.escape(rec['configuration'])}</b> — {html.escape(rec['dataset'])}, "
                f"scale <code>{html.escape(rec['scale'])}</code>, {R._runs(rec)}, "
                f"n_test {rec['n_test']}"
            )
        self.metrics.value = _metrics_html(rec) if rec else ""
        self._show_roc(rec)
        self._show_overlay(rec)

    def _show_roc(self, rec: dict | None, title: str | None = None) -> None:
        png = _roc_png(rec, title or "test ROC") if rec else b""
        self.roc.value, self.roc.layout.display = png, (None if png else "none")

    def _show_overlay(self, rec: dict | None) -> None:
        path = rec.get("example_overlay") if rec else None
        full = (
            project_root() / path if path and not Path(path).is_absolute() else (Path(path) if path else None)
        )
        if full is None or not full.is_file():
            self.overlay.value, self.overlay.layout.display = b"", "none"
            return
        self.overlay.value, self.overlay.layout.display = full.read_bytes(), None

    # --- live training -----------------------------------------------------------------
    def _on_train(self, _button=None) -> None:
        self.start_training()

    def start_training(self) -> None:
        """Run the trainer on the current settings (in a thread if ``background``)."""
        if self.thread is not None and self.thread.is_alive():
            self.train_status.value = "a run is already in progress"
            return
        settings = self.settings
        base = self.runs_dir or Path(tempfile.mkdtemp(prefix="awm-live-"))
        key = hashlib.sha256(json.dumps([settings, self.total_steps], sort_keys=True).encode()).hexdigest()[
            :10
        ]
        out_dir = base / f"live-{key}"  # the same settings reuse their finished run
        out_dir.mkdir(parents=True, exist_ok=True)
        self.progress.value, self.progress.bar_style = 0, ""
        self.train_button.disabled = True
        self.train_status.value = f"training {html.escape(_describe(settings))} in <code>{out_dir}</code> …"
        box: dict = {}

        def work():
            try:
                box["results"] = self.trainer(settings, out_dir)
            except Exception as e:  # shown in the panel: a live kernel must not lose the error
                box["error"] = e

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()
        if self.background:
            threading.Thread(target=self._watch, args=(out_dir, box, settings), daemon=True).start()
        else:
            self._watch(out_dir, box, settings)

    def _watch(self, out_dir: Path, box: dict, settings: dict) -> None:
        while self.thread.is_alive():
            self.thread.join(self.poll_s)
            self._show_log(out_dir)
        self._show_log(out_dir)
        self._finish(out_dir, box, settings)

    def _show_log(self, out_dir: Path) -> None:
        recs = [r for r in read_log(out_dir, "train") if "loss" in r]
        if not recs:
            return
        self.progress.max = max(self.total_steps, recs[-1]["step"])
        self.progress.value = recs[-1]["step"]

        fig, ax = subplots(width=3.6, height=2.6)
        plot_curves([r["step"] for r in recs], {"loss": [r["loss"] for r in recs]}, "step", "training loss",
                    ax=ax, marker=None, title="live run")
        self.loss_plot.value, self.loss_plot.layout.display = _png(fig), None

    def _finish(self, out_dir: Path, box: dict, settings: dict) -> None:
        self.train_button.disabled = False
        if "error" in box:
            e = box["error"]
            self.progress.bar_style = "danger"
            self.train_status.value = (
                f"<b>the run failed</b>: {html.escape(type(e).__name__)}: {html.escape(str(e))}"
            )
            return
        res = dict(box.get("results") or {})
        if res.get("roc") is None:
            res["roc"] = _roc_from_predictions(out_dir)
        res["configuration"] = "live run"
        self.last_run = {"settings": settings, "out_dir": out_dir, "results": res}
        self.progress.bar_style = "success"
        self.train_status.value = f"<b>live run done</b> ({html.escape(self.live_note)})" + _metrics_html(res)
        self.live_roc.value, self.live_roc.layout.display = _roc_png(res, "live run"), None


def _roc_png(rec: Mapping | None, title: str) -> bytes:
    """A record's test ROC as PNG bytes, titled with its AUC and 95% interval (b"" without a curve)."""
    if not rec or not rec.get("roc"):
        return b""

    fig, ax = subplots(width=3.6, height=3.6)
    plot_roc(rec["roc"]["fpr"], rec["roc"]["tpr"], auc=R._get(rec, "auc", "mean"), ax=ax,
             label=rec.get("configuration", "live run"), title=f"{title}\nAUC {R.format_ci(rec.get('auc'))}")
    return _png(fig)


def _describe(settings: Mapping) -> str:
    return ", ".join(f"{LABELS[k]}={v}" for k, v in settings.items())


def _metrics_html(rec: Mapping) -> str:
    """A small HTML table of the metrics with their 95% intervals."""
    rows = "".join(f"<tr><td>{m}</td><td>{R.format_ci(rec.get(m))}</td></tr>" for m in R.METRICS if m in rec)
    lr = rec.get("lesion_recall")
    if lr is not None:
        rows += f"<tr><td>lesion recall</td><td>{lr:.3f}</td></tr>"
    return f"<table><tr><th>metric</th><th>mean [95% CI]</th></tr>{rows}</table>"


def _roc_from_predictions(out_dir: Path) -> dict | None:
    """The ROC curve of a run's ``predictions_test.csv`` (image_id,label,prob), if any."""
    path = Path(out_dir) / "predictions_test.csv"
    if not path.is_file():
        return None
    import pandas as pd
    from sklearn.metrics import roc_curve

    df = pd.read_csv(path)
    if df["label"].nunique() < 2:
        return None
    fpr, tpr, _ = roc_curve(df["label"], df["prob"])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
