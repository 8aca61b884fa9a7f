"""Write synthetic mammograms as a VinDr-Mammo-shaped dataset.

The result is indistinguishable, to the loader, from the real thing::

    OUTDIR/
      breast-level_annotations.csv   one row per image
      finding_annotations.csv        one row per finding, or a "No Finding" row
      images/<study_id>/<image_id>.dicom
      synth_manifest.json            the settings it was made with

so :func:`awm_lib.data.vindr.load_vindr` serves both, and every chapter of the
book runs unchanged on real VinDr-Mammo.

- **Studies.** One study is one woman: four images, L/R x CC/MLO. ``n`` images
  are rounded UP to whole studies (``n = 10`` gives 3 studies, 12 images). Both
  breasts of a woman share her density; each breast has its own findings, and
  a finding shows in both views of its breast at a consistent depth.
- **Splits.** ~20% of the studies (at least one, when there are two or more)
  are "test", the rest "training", drawn with the seed. Both breasts of a woman
  are always on the same side.
- **Prevalence.** Each breast carries a cancer with probability ``prevalence``,
  so about that share of the images are BI-RADS 4/5. VinDr-Mammo's test split
  has ~5% (the paper's test list: 198 of 4000); the default 0.2 gives a small
  dataset enough positives to learn from. It is a probability, so a small
  set can end up with no cancer in a split (``--n 48`` has 2 test studies,
  4 test breasts: no cancer among them with probability 0.8**4 = 0.41); the
  writer then says so (:class:`SplitWithoutCancerWarning`), because such a
  split has no AUC. Raise ``n`` or ``prevalence``, or change the seed.
- **Resumable.** Studies are independent random streams (``seed``, study
  index), every file is written atomically, a study's annotations are kept in
  ``.synth/<study_id>.json`` once its four images are on disk, and the two
  CSVs are written last. Run it again after an interruption and it skips the
  studies that are done.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from awm_lib.data.dicom import write_mammo_dicom
from awm_lib.data.synth_findings import VINDR_CATEGORY
from awm_lib.data.synthetic import DENSITY_PRIOR, SynthConfig, render_view, sample_breast
from awm_lib.data.vindr import BREAST_COLUMNS, BREAST_CSV, FINDING_COLUMNS, FINDING_CSV
from awm_lib.errors import ConfigError, DataError
from awm_lib.io_utils import atomic_path, write_json_atomic
from awm_lib.paths import cache_root

MANIFEST = "synth_manifest.json"
FORMAT_VERSION = 1


class SplitWithoutCancerWarning(UserWarning):
    """A split of the synthetic dataset has no BI-RADS 4/5 image: its AUC is undefined."""


@dataclass
class SynthDatasetSummary:
    root: Path
    n_studies: int
    n_images: int
    n_cancer_images: int
    n_test_images: int
    n_written: int  # images rendered by this call (the rest were already there)
    n_test_cancer_images: int = 0

    def describe(self) -> str:
        n_train, n_train_cancer = (
            self.n_images - self.n_test_images,
            self.n_cancer_images - self.n_test_cancer_images,
        )
        return (
            f"{self.n_images} images ({self.n_studies} stud{'y' if self.n_studies == 1 else 'ies'}; "
            f"{self.n_cancer_images} BI-RADS 4/5; "
            f"{n_train} training ({n_train_cancer} BI-RADS 4/5), {self.n_test_images} test "
            f"({self.n_test_cancer_images} BI-RADS 4/5); "
            f"{self.n_written} written now) in {self.root}"
        )


def _hex_id(*parts) -> str:
    """A VinDr-looking 32-hex id, deterministic for its parts."""
    return hashlib.md5(":".join(str(p) for p in ("awm-synth", *parts)).encode()).hexdigest()


def _uid(hex_id: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[hex_id])


def n_studies_for(n_images: int) -> int:
    """Images round up to whole studies of four."""
    return max(1, math.ceil(n_images / 4))


def pick_test_studies(n_studies: int, seed: int, test_fraction: float = 0.2) -> set[int]:
    """Indices of the test studies: ~``test_fraction`` of them, at least one when there are two."""
    if n_studies < 2:
        return set()
    k = min(n_studies - 1, max(1, round(test_fraction * n_studies)))
    return set(np.random.default_rng([seed, 7]).permutation(n_studies)[:k].tolist())


def _settings(n, seed, size, difficulty, prevalence, bits_stored, test_fraction) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "n_requested": n,
        "n_studies": n_studies_for(n),
        "seed": seed,
        "size": size,
        "difficulty": difficulty,
        "prevalence": prevalence,
        "bits_stored": bits_stored,
        "test_fraction": test_fraction,
    }


def _write_study(root, index, settings, split) -> tuple[dict, int]:
    """Render and write one woman's four images; return her annotation rows."""
    seed = settings["seed"]
    rng = np.random.default_rng([seed, index])
    study_id = _hex_id(seed, index)
    density = str(rng.choice(list(DENSITY_PRIOR), p=list(DENSITY_PRIOR.values())))
    bits = settings["bits_stored"] or int(rng.choice([12, 14]))
    breast_rows, finding_rows, written = [], [], 0
    for lat in ("R", "L"):
        cfg = SynthConfig(
            height=settings["size"],
            laterality=lat,
            density=density,
            bits_stored=bits,
            difficulty=settings["difficulty"],
            p_malignant=settings["prevalence"],
        )
        spec = sample_breast(cfg, rng)
        for view in ("CC", "MLO"):
            image_id = _hex_id(seed, index, lat, view)
            series_id = _hex_id(seed, index, lat, view, "series")
            path = root / "images" / study_id / f"{image_id}.dicom"
            m = render_view(spec, replace(cfg, view=view))
            _write_dicom(
                path, m, study_id=study_id, series_id=series_id, patient=f"SYNTH{seed:04d}-{index:06d}"
            )
            written += 1
            h, w = m.pixels.shape
            row = dict(
                study_id=study_id,
                series_id=series_id,
                image_id=image_id,
                laterality=lat,
                view_position=view,
                height=h,
                width=w,
                breast_birads=f"BI-RADS {m.breast_birads}",
                breast_density=f"DENSITY {density}",
                split=split,
            )
            breast_rows.append(row)
            for les in m.lesions:
                box = dict(zip(("xmin", "ymin", "xmax", "ymax"), (round(v, 2) for v in les.box)))
                finding_rows.append(
                    {
                        **row,
                        "finding_categories": str([VINDR_CATEGORY[les.kind]]),
                        "finding_birads": f"BI-RADS {les.birads}",
                        **box,
                    }
                )
            if not m.lesions:
                finding_rows.append(
                    {
                        **row,
                        "finding_categories": "['No Finding']",
                        "finding_birads": None,
                        "xmin": None,
                        "ymin": None,
                        "xmax": None,
                        "ymax": None,
                    }
                )
    return {"study_id": study_id, "breast": breast_rows, "findings": finding_rows}, written


def _write_dicom(path, m, *, study_id, series_id, patient) -> None:
    top = 2**m.bits_stored - 1
    tissue = m.pixels[m.mask]
    lo, hi = (
        (float(np.percentile(tissue, 0.5)), float(np.percentile(tissue, 99.5)))
        if tissue.size
        else (0.0, float(top))
    )
    orientation = {("L", "CC"): "A\\R", ("R", "CC"): "P\\L", ("L", "MLO"): "A\\FR", ("R", "MLO"): "P\\FL"}[
        (m.laterality, m.view)
    ]
    write_mammo_dicom(
        path,
        m.pixels,
        bits_stored=m.bits_stored,
        photometric="MONOCHROME2",
        laterality=m.laterality,
        view=m.view,
        window=(0.5 * (lo + hi), max(hi - lo, 1.0)),
        PatientID=patient,
        PatientName=patient,
        StudyID=study_id[:16],
        StudyInstanceUID=_uid(study_id),
        SeriesInstanceUID=_uid(series_id),
        StudyDate="20260101",
        ContentDate="20260101",
        StudyTime="000000",
        ContentTime="000000",
        PixelSpacing=[f"{m.pixel_mm:.6f}", f"{m.pixel_mm:.6f}"],
        ImagerPixelSpacing=[f"{m.pixel_mm:.6f}", f"{m.pixel_mm:.6f}"],
        PatientOrientation=orientation.split("\\"),
        BodyPartExamined="BREAST",
        Manufacturer="awm_lib synthetic",
        BreastImplantPresent="NO",
    )


def _check_manifest(root: Path, settings: dict) -> None:
    path = root / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"unreadable manifest ({e}); delete the folder and run again", path) from e
        if {k: old.get(k) for k in settings} != settings:
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            raise DataError(
                f"this folder holds a synthetic dataset made with other settings {diff} (old, new); choose "
                "another OUTDIR or delete it",
                root,
            )
    else:
        write_json_atomic(path, settings)


def write_synthetic_dataset(
    outdir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 1024,
    *,
    difficulty: float = 0.3,
    prevalence: float = 0.2,
    bits_stored: int | None = None,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> SynthDatasetSummary:
    """Write ``n`` images (rounded up to whole studies of 4) of size ``size`` (long side) to ``outdir``.

    ``bits_stored=None`` draws 12 or 14 per study (VinDr-Mammo has both).
    Returns counts; see the module docstring for the layout and the rules.
    """
    from tqdm.auto import tqdm

    if n < 1:
        raise ConfigError(f"n must be at least 1 image, got {n}")
    if not 0 <= prevalence <= 1 or not 0 <= difficulty <= 1 or not 0 <= test_fraction < 1:
        raise ConfigError(
            f"prevalence ({prevalence}), difficulty ({difficulty}) must be in [0, 1] and test_fraction "
            f"({test_fraction}) in [0, 1)"
        )
    SynthConfig(height=size, bits_stored=bits_stored or 12)  # validates size and bits
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    settings = _settings(n, seed, size, difficulty, prevalence, bits_stored, test_fraction)
    _check_manifest(root, settings)
    n_studies = settings["n_studies"]
    tests = pick_test_studies(n_studies, seed, test_fraction)

    studies, written = [], 0
    bar = tqdm(total=4 * n_studies, desc="synthetic mammograms", unit="img", disable=not progress)
    for index in range(n_studies):
        side = root / ".synth" / f"{_hex_id(seed, index)}.json"
        study = _load_done(root, side)
        if study is None:
            study, k = _write_study(root, index, settings, "test" if index in tests else "training")
            written += k
            write_json_atomic(side, study)
        studies.append(study)
        bar.update(4)
    bar.close()
    _write_csvs(root, studies)
    rows = [r for s in studies for r in s["breast"]]
    summary = SynthDatasetSummary(
        root=root,
        n_studies=n_studies,
        n_images=len(rows),
        n_cancer_images=sum(_is_cancer(r) for r in rows),
        n_test_images=sum(r["split"] == "test" for r in rows),
        n_written=written,
        n_test_cancer_images=sum(_is_cancer(r) and r["split"] == "test" for r in rows),
    )
    warn_splits_without_cancer(rows, root, prevalence)
    return summary


def _is_cancer(row: dict) -> bool:
    return row["breast_birads"] in ("BI-RADS 4", "BI-RADS 5")


def warn_splits_without_cancer(rows: list[dict], root: Path, prevalence: float) -> list[str]:
    """Warn (:class:`SplitWithoutCancerWarning`) for each non-empty split with no BI-RADS 4/5 image; return
    their names."""
    empty = []
    for split in ("training", "test"):
        mine = [r for r in rows if r["split"] == split]
        if mine and not any(_is_cancer(r) for r in mine):
            empty.append(split)
            warnings.warn(
                f"{root}: the {split} split has no cancer (0 of {len(mine)} images are BI-RADS 4/5 at "
                "prevalence "
                f"{prevalence:g}), so its AUC is undefined (n/a); use a larger --n, a higher --prevalence or "
                "another --seed",
                SplitWithoutCancerWarning,
                stacklevel=3,
            )
    return empty


def _load_done(root: Path, side: Path) -> dict | None:
    """A finished study's rows, or None when it must be (re)made."""
    if not side.is_file():
        return None
    try:
        study = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = all((root / "images" / r["study_id"] / f"{r['image_id']}.dicom").is_file() for r in study["breast"])
    return study if ok else None


def _write_csvs(root: Path, studies: list[dict]) -> None:
    import pandas as pd

    breast = pd.DataFrame([r for s in studies for r in s["breast"]], columns=BREAST_COLUMNS)
    findings = pd.DataFrame([r for s in studies for r in s["findings"]], columns=FINDING_COLUMNS)
    for name, df in ((FINDING_CSV, findings), (BREAST_CSV, breast)):
        with atomic_path(root / name) as tmp:
            df.to_csv(tmp, index=False)


def default_dataset_dir(
    n: int, seed: int, size: int, difficulty: float = 0.3, prevalence: float = 0.2
) -> Path:
    name = f"{n}-{seed}-{size}"
    if (difficulty, prevalence) != (0.3, 0.2):
        name += f"-d{difficulty:g}-p{prevalence:g}"
    return cache_root() / "synthetic" / name


def ensure_synthetic_dataset(
    n: int = 64,
    seed: int = 0,
    size: int = 512,
    root: str | Path | None = None,
    *,
    progress: bool = True,
    **kwargs,
) -> Path:
    """The embedded default data: generate it once (into the cache) and return its folder.

    ``root`` defaults to ``paths.cache_root() / "synthetic" / "<n>-<seed>-<size>"``.
    A finished dataset (both CSVs present, same settings) is returned at once;
    a half-written one is completed.
    """
    root = (
        Path(root)
        if root is not None
        else default_dataset_dir(n, seed, size, kwargs.get("difficulty", 0.3), kwargs.get("prevalence", 0.2))
    )
    done = (root / BREAST_CSV).is_file() and (root / FINDING_CSV).is_file()
    if done:
        settings = _settings(
            n,
            seed,
            size,
            kwargs.get("difficulty", 0.3),
            kwargs.get("prevalence", 0.2),
            kwargs.get("bits_stored"),
            kwargs.get("test_fraction", 0.2),
        )
        _check_manifest(root, settings)
        return root
    write_synthetic_dataset(root, n, seed, size, progress=progress, **kwargs)
    return root
