"""The one configuration system (awm_lib.config) as training, pretraining and the benchmark use it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from awm_lib.cli import main
from awm_lib.config import apply_overrides, did_you_mean, preset_from
from awm_lib.errors import ConfigError
from awm_lib.pretrain.config import PRESETS as PRETRAIN_PRESETS
from awm_lib.pretrain.config import PretrainConfig, preset_config
from awm_lib.train.config import PRESETS as TRAIN_PRESETS
from awm_lib.train.config import make_config


def test_did_you_mean_names_the_closest_choices():
    assert did_you_mean("ture", ("true", "false")) == "; did you mean true?"
    assert did_you_mean("zzz", ("true", "false")) == ""


@pytest.mark.parametrize(
    "override,message",
    [
        ("bf16=ture", "bf16='ture': expected true or false; did you mean true?"),  # it used to become False
        ("bf16=maybe", "bf16='maybe': expected true or false"),
        ("lrr=1e-3", "unknown configuration key 'lrr'; did you mean lr"),
        ("lr=fast", "lr='fast': expected float"),
        ("max_steps=1.5", "max_steps must be an integer"),
        ("mask_ratio=0.1", "mask_ratio must be a list"),
        ("mask_ratio=0.1,0.2,0.3", "mask_ratio must have 2 entries"),
        ("seed", "must look like key=value"),
    ],
)
def test_pretraining_overrides_are_typed_like_training_ones(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        preset_config("cpu-smoke", [override])


def test_pretraining_overrides_parse_each_type():
    cfg = preset_config(
        "cpu-smoke",
        [
            "bf16=true",
            "max_images=10",
            "mias_root=none",
            "teacher_temp=0.03,0.06",
            "init_from=/tmp/ckpt",
            "save_shard_mb=15",
        ],
    )
    assert cfg.bf16 is True and cfg.max_images == 10 and isinstance(cfg.max_images, int)
    assert cfg.mias_root is None and cfg.teacher_temp == (0.03, 0.06) and cfg.init_from == "/tmp/ckpt"
    assert cfg.save_shard_mb == 15.0
    with pytest.raises(ConfigError, match="max_steps must be an integer"):
        preset_config("cpu-smoke", max_steps="many")  # keyword overrides are checked too


def test_presets_are_functions_returning_fresh_configs_everywhere():
    for presets in (TRAIN_PRESETS, PRETRAIN_PRESETS):
        for name, build in presets.items():
            a, b = build(), build()
            assert a == b and a is not b, name
    smoke = preset_from(PRETRAIN_PRESETS, "cpu-smoke")
    assert (smoke.hidden_size, smoke.depth, smoke.bf16, smoke.time_limit_minutes) == (96, 4, False, 5.0)
    with pytest.raises(
        ConfigError, match=re.escape("unknown preset 'cpu-smok'; choose one of") + ".*did you mean cpu-smoke"
    ):
        preset_config("cpu-smok")
    with pytest.raises(ConfigError, match="unknown preset 'smok'.*did you mean smoke"):
        make_config("smok")


def test_one_parser_for_nested_and_flat_configs():
    train = apply_overrides(make_config("smoke"), ["optim.amp=off"])
    pre = apply_overrides(PretrainConfig(), ["bf16=off"])
    assert train.optim.amp is False and pre.bf16 is False


def test_the_pretrain_command_refuses_a_misspelt_boolean(capsys):
    assert main(["pretrain", "--set", "bf16=ture"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        " error: bf16='ture': expected true or false; did you mean true?"
    )


def test_the_pretrain_command_refuses_it_from_the_shell_too():
    out = subprocess.run(
        [sys.executable, "-m", "awm_lib", "pretrain", "--set", "bf16=ture"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "did you mean true?" in out.stderr and "bf16='ture'" in out.stderr


def test_the_benchmark_takes_the_same_typed_overrides():
    from awm_lib.cli import build_parser
    from awm_lib.cli.bench_cmd import _configs

    args = build_parser().parse_args(
        ["bench", "--config", "default", "--tiny", "--set", "crop_size=112", "--set", "topk=3"]
    )
    (cfg,) = _configs(args)
    assert (cfg.crop_size, cfg.topk, cfg.name) == (112, 3, "default@tiny@crop_size=112,topk=3")
    with pytest.raises(ConfigError, match="did you mean crop_size"):
        _configs(build_parser().parse_args(["bench", "--config", "default", "--set", "crop_sise=112"]))
    with pytest.raises(ConfigError, match="did you mean default"):
        _configs(build_parser().parse_args(["bench", "--config", "defualt"]))


def test_the_ablation_names_the_closest_configuration_and_scale():
    from awm_lib.experiments.ablation_study import CONFIGURATIONS, config_for

    name = next(iter(CONFIGURATIONS))
    with pytest.raises(ConfigError, match=f"did you mean {re.escape(name)}"):
        config_for(name + "x", "mias", "cpu-smoke")
    with pytest.raises(ConfigError, match="did you mean cpu-smoke"):
        config_for(name, "mias", "cpu-smok")
