"""TrainConfig: presets, typed ``--set`` overrides, round trips, and loud errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from awm_lib.config import apply_overrides, from_dict, parse_text, to_dict
from awm_lib.errors import ConfigError
from awm_lib.train.config import PRESETS, TrainConfig, config_from_dict, make_config


@dataclass
class Inner:
    n: int = 1
    mode: Literal["a", "b"] = "a"
    size: tuple[int, int] = (2, 3)


@dataclass
class Outer:
    lr: float = 0.1
    name: str = "x"
    flag: bool = False
    limit: int | None = None
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_overrides_parse_each_type():
    cfg = apply_overrides(
        Outer(),
        [
            "lr=3e-4",
            "name=hello world",
            "flag=yes",
            "limit=7",
            "tags=a,b",
            "inner.n=5",
            "inner.mode=b",
            "inner.size=[4,5]",
        ],
    )
    assert cfg == Outer(
        lr=3e-4, name="hello world", flag=True, limit=7, tags=["a", "b"], inner=Inner(5, "b", (4, 5))
    )
    assert apply_overrides(cfg, ["limit=none"]).limit is None
    assert apply_overrides(cfg, ["lr=1"]).lr == 1.0 and isinstance(apply_overrides(cfg, ["lr=1"]).lr, float)


@pytest.mark.parametrize(
    "override,message",
    [
        ("lrr=1", "unknown configuration key 'lrr'; did you mean lr"),
        ("inner.m=1", "unknown configuration key 'inner.m'"),
        ("inner.n=1.5", "inner.n must be an integer"),
        ("inner.n=x", "inner.n='x': expected int"),
        ("flag=maybe", "flag='maybe': expected true or false"),
        ("inner.mode=c", "inner.mode='c' is not one of ['a', 'b']"),
        ("inner.size=[1]", "inner.size must have 2 entries"),
        ("limit", "must look like key=value"),
        ("inner=3", "'inner' is a section"),
        ("lr.x=1", "'lr' is a value, not a section"),
        ("lr=none", "lr='none': expected float"),
    ],
)
def test_bad_overrides_raise_config_error(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_overrides(Outer(), [override])


def test_from_dict_checks_keys_and_types():
    d = to_dict(Outer(inner=Inner(size=(7, 8))))
    assert d["inner"]["size"] == [7, 8]  # JSON-ready
    assert from_dict(Outer, d) == Outer(inner=Inner(size=(7, 8)))  # lists come back as tuples
    with pytest.raises(ConfigError, match="unknown configuration key 'inner.extra'"):
        from_dict(Outer, {"inner": {"extra": 1}})
    with pytest.raises(ConfigError, match="lr must be a number"):
        from_dict(Outer, {"lr": "fast"})
    assert parse_text("1e3", int | None, "k") == 1000


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name):
    cfg = make_config(name)
    assert isinstance(cfg, TrainConfig) and cfg.preset == name
    assert config_from_dict(to_dict(cfg)) == cfg


def test_presets_match_their_descriptions():
    smoke, default, paper = make_config("smoke"), make_config("default"), make_config("paper")
    # the paper: ViT-B/14, 448-px crops, k = 5 counting the anchor (tests/test_paper_recipe.py: every point);
    # default: ViT-S/14, 224 px, top-5 + anchor
    assert (
        paper.model.crop_size == 448
        and paper.model.topk + 1 == 5
        and "base" in paper.model.backbone.name_or_path
    )
    assert (
        default.model.crop_size == 224
        and default.model.topk == 5
        and "small" in default.model.backbone.name_or_path
    )
    # smoke: a tiny random backbone on small images
    assert smoke.model.backbone.name_or_path is None and smoke.model.backbone.random_arch == "micro"
    assert smoke.data.long_side <= 512 and smoke.model.crop_size <= 112


def test_make_config_applies_data_fields_then_overrides():
    cfg = make_config(
        "smoke", ["data.fold=2", "optim.lr_head=5e-4", "model.pooling=attention"], dataset="mias", root="/x"
    )
    assert (cfg.data.dataset, cfg.data.root, cfg.data.fold) == ("mias", "/x", 2)
    assert cfg.optim.lr_head == 5e-4 and cfg.model.pooling == "attention"


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr_hed=1", "did you mean optim.lr_head"),
        ("optim.epochs=0", "epochs must be >= 1"),
        ("data.fold=7", "fold must be in 0..4"),
        ("data.dataset=ddsm", "not one of"),
        ("model.pooling=max", "pooling='max'"),
        ("model.crop_size=50", "multiple of the ViT patch size"),
        ("loss.temperature=0", "temperature=0.0 must be > 0"),
    ],
)
def test_train_config_rejects_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        make_config("smoke", [override])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        make_config("huge")
