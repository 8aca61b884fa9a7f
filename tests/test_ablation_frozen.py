"""The ablation's cpu-frozen scale: the frozen preset's runs, pinned backbone, the redefined baseline."""

from __future__ import annotations

from awm_lib.experiments import ablation
from awm_lib.experiments.ablation import config_for


def test_cpu_frozen_scale_pins_the_backbone_and_redefines_the_baseline():
    paper = config_for("roi-paper", "mias", "cpu-frozen", seed=3, fold=4)
    assert paper.preset == "frozen" and paper.features.cached and paper.model.backbone.name_or_path is None
    assert (
        paper.model.position == "sinecat+rope1d"
        and paper.loss.repulsive_on == "tokens"
        and paper.loss.repulsive_weight > 0
    )
    assert config_for("roi-rope2d-repulsive", "mias", "cpu-frozen").model.position == "rope2d"
    base = config_for("baseline-full-image", "mias", "cpu-frozen")
    assert (base.arch, base.data.proposer, base.model.topk, base.model.crop_size) == ("roi", "none", 0, 224)
    assert (
        config_for("baseline-full-image", "mias", "cpu-smoke").arch == "full_image"
    )  # other scales keep theirs
    ssl = config_for("backbone-ssl", "mias", "cpu-frozen")
    assert (
        ssl.model.backbone.name_or_path == "checkpoints/awm-dino-cpu"
        and not ssl.model.backbone.allow_random_fallback
    )
    syn = config_for("roi-paper", "synthetic", "cpu-frozen")
    assert syn.data.synthetic_n >= 1000 and ablation.SCALES["cpu-frozen"].seeds == (0, 1, 2, 3, 4)
    from awm_lib.experiments.ablation_records import backbone_of

    assert backbone_of(paper) == "random:small:0" and backbone_of(ssl) == "checkpoints/awm-dino-cpu"
    names = {c.name for c in ablation.CONTRASTS}
    assert {
        "method",
        "proposer: blob -> oracle",
        "proposer: none -> blob",
        "proposer: random -> blob",
    } <= names
    for c in ablation.CONTRASTS:
        assert c.a in ablation.CONFIGURATIONS and c.b in ablation.CONFIGURATIONS
    assert len(set(ablation.DEFAULT_CONFIGS)) >= 11


def test_validation_selection_variants_are_valid_settings():
    """Every variant of scripts/select_frozen_preset.py (how the frozen preset's optimiser and
    proposer-oracle-k1's k were chosen on validation) still parses into a valid config."""
    import importlib.util

    from awm_lib import paths

    spec = importlib.util.spec_from_file_location(
        "select_frozen_preset", paths.PROJECT_ROOT / "scripts" / "select_frozen_preset.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = type("Args", (), {"config": None})()
    for name in mod.VARIANTS:
        assert mod.run_config(args, name, seed=0, fold=1).data.fold == 1
    args.config = "proposer-oracle"
    assert mod.run_config(args, "k1", seed=1, fold=2).model.topk == 1
    assert mod.run_config(args, "token-bn", seed=0, fold=0).model.token_norm == "batchnorm"
