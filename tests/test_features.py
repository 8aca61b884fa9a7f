"""The RoI feature cache (awm_lib.features) and frozen-backbone training on it.

Keys: every input that changes a token changes its key, so stale tokens are
never read. Writes: atomic shards, an interrupted fill keeps what it finished.
The frozen path: the RoI classifier on cached tokens gives exactly what it gives
on pixels. The CLI: ``train --preset frozen`` twice, the second run computes no token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import train_argv

from awm_lib.data.cache import PreprocessCache
from awm_lib.features import FeatureCache, TokenInput, crop_key, file_sha256, resolve
from awm_lib.features import cache as fcache
from awm_lib.features import extract as fextract
from awm_lib.features.key import CropSpec, FeatureSpec
from awm_lib.features.store import TokenStore
from awm_lib.model.backbone import BackboneConfig, save_tiny_dinov2
from awm_lib.model.position import boxes_to_cxcywh_norm
from awm_lib.model.roi_transformer import RoIClassifier, RoIClassifierConfig

pytestmark = pytest.mark.filterwarnings("ignore::awm_lib.model.backbone.RandomBackboneWarning")


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AWM_CACHE", str(tmp_path / "cache"))  # file-hash index, preprocessing, tokens
    return tmp_path / "cache"


def _write_image(path: Path, seed: int = 0, size=(180, 140)) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    breast = ((xx / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2) <= 1
    img[breast] = (120 + 80 * rng.random(breast.sum())).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    return [_write_image(tmp_path / f"img{i}.png", seed=i) for i in range(3)]


@pytest.fixture
def tiny(tmp_path):
    return save_tiny_dinov2(
        tmp_path / "tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, seed=0
    )


def _boxes(pc: PreprocessCache, paths) -> list[np.ndarray]:
    out = []
    for p in paths:
        h, w = pc.get(p).pixels.shape
        out.append(np.array([[0, 0, w, h], [5, 8, 45, 48], [20, 30, 90, 100]], np.float32))
    return out


def _cache(backbone_cfg, pc, cache_env, crop_size=28, **kw) -> FeatureCache:
    return FeatureCache(backbone_cfg, crop_size=crop_size, preprocess=pc, root=cache_env / "features", **kw)


# --- keys ----------------------------------------------------------------------------------
def test_crop_key_depends_on_image_and_box_only_to_the_thousandth_pixel():
    k = crop_key("a" * 64, [1, 2, 3, 4])
    assert crop_key("a" * 64, [1.0, 2.0, 3.0, 4.0004]) == k  # below the key's resolution
    assert crop_key("a" * 64, [1, 2, 3, 4.01]) != k
    assert crop_key("b" * 64, [1, 2, 3, 4]) != k


def test_feature_spec_digest_changes_with_everything_a_token_depends_on():
    crop = CropSpec(112, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    base = FeatureSpec("random:small:0", crop, {"long_side": 1024}, {"hidden_size": 384}, name="x")
    variants = [
        FeatureSpec("random:small:1", crop, {"long_side": 1024}, {"hidden_size": 384}),  # weights
        FeatureSpec("sha256:ab", crop, {"long_side": 1024}, {"hidden_size": 384}),
        FeatureSpec(
            "random:small:0",
            CropSpec(224, crop.pixel_mean, crop.pixel_std),
            {"long_side": 1024},
            {"hidden_size": 384},
        ),
        FeatureSpec(
            "random:small:0",
            CropSpec(112, (0.5, 0.5, 0.5), crop.pixel_std),
            {"long_side": 1024},
            {"hidden_size": 384},
        ),
        FeatureSpec(
            "random:small:0",
            CropSpec(112, crop.pixel_mean, crop.pixel_std, max_value=65535.0),
            {"long_side": 1024},
            {"hidden_size": 384},
        ),
        FeatureSpec(
            "random:small:0",
            CropSpec(112, crop.pixel_mean, crop.pixel_std, antialias=False),
            {"long_side": 1024},
            {"hidden_size": 384},
        ),
        FeatureSpec("random:small:0", crop, {"long_side": 2048}, {"hidden_size": 384}),  # preprocessing
    ]
    digests = {v.digest() for v in variants}
    assert base.digest() not in digests and len(digests) == len(variants)
    assert (
        FeatureSpec("random:small:0", crop, {"long_side": 1024}, {"hidden_size": 384}, name="other").digest()
        == base.digest()
    )


def test_file_hash_follows_the_content(tmp_path, cache_env):
    p = tmp_path / "f.bin"
    p.write_bytes(b"one")
    h1 = file_sha256(p)
    p.write_bytes(b"two")  # same size, new content (and mtime)
    assert file_sha256(p) != h1
    p.write_bytes(b"one")
    assert file_sha256(p) == h1


def test_weights_identity_hashes_the_weight_files(tiny, tmp_path):
    a = resolve(BackboneConfig(name_or_path=str(tiny)))
    assert a.kind == "local" and a.weights.startswith("sha256:")
    other = save_tiny_dinov2(
        tmp_path / "tiny2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, seed=1
    )
    assert resolve(BackboneConfig(name_or_path=str(other))).weights != a.weights
    r = resolve(BackboneConfig(random_arch="micro"), random_seed=3)
    assert r.kind == "random" and r.weights == "random:micro:3"


def test_missing_weights_fall_back_to_random_loudly_or_raise(tmp_path):
    with pytest.warns(Warning, match="RANDOM BACKBONE"):
        r = resolve(BackboneConfig(name_or_path=str(tmp_path / "nope"), random_arch="micro"))
    assert r.kind == "random" and "no such" in r.notes[0]
    with pytest.raises(Exception, match="no such save_pretrained folder"):
        resolve(BackboneConfig(name_or_path=str(tmp_path / "nope"), allow_random_fallback=False))


def test_hub_backbones_are_skipped_offline_with_one_line(monkeypatch):
    from awm_lib.features import available_backbones

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    usable, skipped = available_backbones(
        [
            BackboneConfig(name_or_path="facebook/dinov2-small", allow_random_fallback=False),
            BackboneConfig(random_arch="micro"),
        ]
    )
    assert [u.kind for u in usable] == ["random"]
    assert (
        len(skipped) == 1
        and "\n" not in skipped[0]
        and skipped[0].startswith("skipped facebook/dinov2-small")
    )


# --- the cache ---------------------------------------------------------------------------
def test_tokens_are_computed_once_and_a_changed_key_never_reuses_them(tiny, images, cache_env, tmp_path):
    pc = PreprocessCache(root=cache_env / "pre", long_side=128)
    boxes = _boxes(pc, images)
    cfg = BackboneConfig(name_or_path=str(tiny))
    fc = _cache(cfg, pc, cache_env)
    t1 = fc.tokens(images, boxes, progress=False)
    assert t1.shape == (3, 3, 32) and fc.last_fill.n_computed == 9
    t2 = _cache(cfg, pc, cache_env).tokens(images, boxes, progress=False)
    assert torch.equal(t1, t2)
    fc2 = _cache(cfg, pc, cache_env)
    fc2.tokens(images, boxes, progress=False)
    assert fc2.last_fill.n_computed == 0  # warm: nothing computed, the backbone never built
    assert fc2._backbone is None

    # a moved box: only that crop is new
    moved = [b.copy() for b in boxes]
    moved[0][1] += 3.0
    fc3 = _cache(cfg, pc, cache_env)
    t3 = fc3.tokens(images, moved, progress=False)
    assert (
        fc3.last_fill.n_computed == 1 and not torch.equal(t3[0, 1], t1[0, 1]) and torch.equal(t3[1:], t1[1:])
    )

    # a changed image file (same name): its crops are recomputed
    _write_image(images[1], seed=99)
    fc4 = _cache(cfg, pc, cache_env)
    t4 = fc4.tokens(images, boxes, progress=False)
    assert fc4.last_fill.n_computed == 3 and not torch.equal(t4[1], t1[1])

    # other crop size, other weights, other preprocessing: other folders, new tokens
    assert _cache(cfg, pc, cache_env, crop_size=42).store.dir != fc.store.dir
    other = save_tiny_dinov2(
        tiny, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, seed=5
    )  # overwritten in place
    fc5 = _cache(BackboneConfig(name_or_path=str(other)), pc, cache_env)
    assert fc5.store.dir != fc.store.dir
    t5 = fc5.tokens(images, boxes, progress=False)
    assert fc5.last_fill.n_computed == 9 and not torch.allclose(t5, t4)
    pc2 = PreprocessCache(root=cache_env / "pre", long_side=96)
    assert _cache(cfg, pc2, cache_env).store.dir != fc5.store.dir


def test_cls_and_cls_plus_mean_share_one_cache(tiny, images, cache_env):
    pc = PreprocessCache(root=cache_env / "pre", long_side=128)
    boxes = _boxes(pc, images)
    fc = _cache(BackboneConfig(name_or_path=str(tiny)), pc, cache_env)
    cls = fc.tokens(images, boxes, progress=False)
    both = fc.tokens(images, boxes, embedding="cls+mean", progress=False)
    assert fc.last_fill.n_computed == 0 and both.shape == (3, 3, 64) and torch.equal(both[..., :32], cls)


def test_random_backbone_is_the_same_for_every_run(images, cache_env):
    pc = PreprocessCache(root=cache_env / "pre", long_side=128)
    boxes = _boxes(pc, images)[:1]
    torch.manual_seed(123)  # the global RNG must not matter
    a = _cache(BackboneConfig(random_arch="micro"), pc, cache_env).resolved.build()
    torch.manual_seed(456)
    b = _cache(BackboneConfig(random_arch="micro"), pc, cache_env).resolved.build()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = FeatureCache(
        BackboneConfig(random_arch="micro"),
        crop_size=28,
        preprocess=pc,
        random_seed=1,
        root=cache_env / "features",
    )
    assert c.store.dir != _cache(BackboneConfig(random_arch="micro"), pc, cache_env).store.dir
    assert c.tokens(images[:1], boxes, progress=False).shape == (1, 3, 64)


# --- atomic writes ---------------------------------------------------------------------------
def test_an_interrupted_fill_keeps_its_finished_shards_and_leaves_no_partial_file(
    tiny, images, cache_env, monkeypatch
):
    pc = PreprocessCache(root=cache_env / "pre", long_side=128)
    boxes = _boxes(pc, images)
    cfg = BackboneConfig(name_or_path=str(tiny))
    monkeypatch.setattr(fcache, "FLUSH_EVERY", 2)
    real, calls = fextract.embed_crops, {"n": 0}

    def dying(backbone, crops):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed during the third batch
        return real(backbone, crops)

    monkeypatch.setattr(fextract, "embed_crops", dying)
    fc = _cache(cfg, pc, cache_env, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        fc.tokens(images, boxes, progress=False)
    files = sorted(p.name for p in fc.store.dir.iterdir())
    assert not [f for f in files if ".tmp" in f], files  # no half-written shard
    assert len(TokenStore(fc.spec, fc.store.root)) == 4  # two batches of 2 crops were kept
    monkeypatch.setattr(fextract, "embed_crops", real)
    fc2 = _cache(cfg, pc, cache_env, batch_size=2)
    t = fc2.tokens(images, boxes, progress=False)
    assert fc2.last_fill.n_computed == 5
    fresh = FeatureCache(cfg, crop_size=28, preprocess=pc, root=cache_env / "other").tokens(
        images, boxes, progress=False
    )
    assert torch.allclose(t, fresh, atol=1e-6)


def test_a_failed_shard_write_leaves_nothing(tmp_path, monkeypatch):
    spec = FeatureSpec("random:micro:0", CropSpec(28, (0.5,) * 3, (0.2,) * 3), {})
    store = TokenStore(spec, tmp_path)
    store.put(["a"], cls=np.ones((1, 4), np.float32), mean=np.zeros((1, 4), np.float32))

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        store.put(["b"], cls=np.ones((1, 4), np.float32), mean=np.zeros((1, 4), np.float32))
    assert [p.name for p in store.dir.glob("*.tmp*")] == []
    fresh = TokenStore(spec, tmp_path)
    assert "a" in fresh and "b" not in fresh
    monkeypatch.undo()
    store.put(["b", "c"], cls=np.ones((2, 4), np.float32), mean=np.zeros((2, 4), np.float32))
    merged = TokenStore(spec, tmp_path)
    merged.compact()
    assert len(merged.shards()) == 1 and len(TokenStore(spec, tmp_path)) == 3


# --- the frozen path equals the pixel path -----------------------------------------------------
def test_frozen_token_path_equals_the_pixel_path(tiny, images, cache_env):
    pc = PreprocessCache(root=cache_env / "pre", long_side=128)
    path = images[0]
    pixels = torch.from_numpy(pc.get(path).pixels)  # (H, W)
    h, w = pixels.shape
    rois = torch.tensor([[[0, 0, w, h], [5, 8, 45, 48], [20, 30, 90, 100]]], dtype=torch.float32)  # (1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    for embedding in ("cls", "cls+mean"):
        bcfg = BackboneConfig(name_or_path=str(tiny), embedding=embedding)
        mcfg = RoIClassifierConfig(
            backbone=bcfg, crop_size=28, topk=2, d_model=32, depth=2, heads=2, pooling="attention"
        )
        torch.manual_seed(0)
        pixel_model = RoIClassifier(mcfg).eval()
        token_model = RoIClassifier(mcfg, backbone=TokenInput(bcfg, pixel_model.backbone.embed_dim)).eval()
        missing, unexpected = token_model.load_state_dict(pixel_model.state_dict(), strict=False)
        assert not missing and all(k.startswith("backbone.") for k in unexpected)  # only the ViT is absent
        assert sum(p.numel() for p in token_model.parameters()) < sum(
            p.numel() for p in pixel_model.parameters()
        )
        tokens = _cache(bcfg, pc, cache_env).tokens(
            [path], [rois[0].numpy()], embedding=embedding, progress=False
        )
        with torch.no_grad():
            a = pixel_model(pixels[None, None], rois, roi_mask=mask, return_attention=True)
            b = token_model.forward_tokens(
                tokens, boxes_to_cxcywh_norm(rois, torch.tensor([[h, w]])), mask, return_attention=True
            )
        for name in ("logits", "roi_embeddings", "tokens", "pooled", "pool_weights"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a.attention, b.attention))
        with pytest.raises(Exception, match="cached tokens"):
            token_model(pixels[None, None], rois)


# --- config and CLI ---------------------------------------------------------------------------
def test_frozen_preset_and_its_checks():
    from awm_lib.errors import ConfigError
    from awm_lib.train.config import make_config

    cfg = make_config("frozen")
    assert (
        cfg.features.cached
        and not cfg.data.augment
        and cfg.model.crop_size == 112
        and cfg.optim.lr_backbone == 0
    )
    with pytest.raises(ConfigError, match="data.augment"):
        make_config("frozen", ["data.augment=true"])
    with pytest.raises(ConfigError, match="arch=roi"):
        make_config("frozen", ["arch=full_image"])
    assert not make_config("smoke").features.cached


FAST = [
    "model.backbone.name_or_path=none",  # not the SSL checkpoint the preset picks when it is there
    "model.backbone.random_arch=micro",
    "model.crop_size=28",
    "model.topk=2",
    "data.long_side=256",
    "data.max_images=12",
    "data.proposer=random",
    "optim.epochs=2",
    "optim.batch_size=4",
    "eval.n_boot=20",
]


def test_train_cli_frozen_twice_second_run_computes_no_token(mias_root, cache_env, tmp_path, capsys):
    from awm_lib.cli import main

    def run(out):
        assert main(train_argv(mias_root, out, preset="frozen", sets=FAST, extra=("--json",))) == 0
        return json.loads(capsys.readouterr().out)

    first = run(tmp_path / "a")
    shards = sorted((cache_env / "features").glob("*/shard-*.npz"))
    assert (
        shards and first["backbone"]["weights"] == "random:micro:0" and first["backbone"]["crop_size"] == 28
    )
    assert first["n_test"] == 12 and 0.0 <= first["auc"]["mean"] <= 1.0
    capsys.readouterr()
    second = run(tmp_path / "b")
    assert sorted((cache_env / "features").glob("*/shard-*.npz")) == shards  # nothing new computed
    assert "RoI features" not in capsys.readouterr().err  # no progress bar when there is no work
    assert second["auc"] == first["auc"] and second["backbone"] == first["backbone"]
    ck = sorted((tmp_path / "b" / "checkpoints").glob("*/*"))
    assert ck and not any(k.startswith("backbone.") for k in _state_keys(tmp_path / "b"))  # the head only
    # evaluate reads the same cached tokens and gives the same test metrics
    assert main(["evaluate", "--checkpoint", str(tmp_path / "b"), "--json", "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["auc"] == second["auc"] and again["backbone"]["weights"] == "random:micro:0"
    assert sorted((cache_env / "features").glob("*/shard-*.npz")) == shards
    # predict puts the frozen ViT back in front of the head: the probability training's predictions hold, up
    first_row = (tmp_path / "b" / "predictions_test.csv").read_text().splitlines()[1].split(",")
    assert (
        main(
            ["predict", str(mias_root / f"{first_row[0]}.png"), "--checkpoint", str(tmp_path / "b"), "--json"]
        )
        == 0
    )
    # (to quantisation: predict resizes the image itself, training read the cache's 8-bit copy)
    assert json.loads(capsys.readouterr().out)["probability"] == pytest.approx(float(first_row[2]), abs=0.02)


def _state_keys(run_dir: Path) -> list[str]:
    from safetensors import safe_open

    from awm_lib.train import checkpoint as ckpt

    with safe_open(str(Path(ckpt.resolve_checkpoint(run_dir, "best")) / ckpt.WEIGHTS), "pt") as sf:
        return list(sf.keys())


def _fill(args) -> int:
    """One process filling the shared cache (for the concurrency test)."""
    tiny, images, root, pre = args
    pc = PreprocessCache(root=pre, long_side=128)
    fc = FeatureCache(BackboneConfig(name_or_path=tiny), crop_size=28, preprocess=pc, root=root, batch_size=2)
    fc.tokens(images, _boxes(pc, images), progress=False)
    return fc.last_fill.n_computed


def test_two_processes_filling_one_cache_compute_each_token_once(tiny, images, cache_env):
    import multiprocessing as mp

    pre, root = cache_env / "pre", cache_env / "features"
    pc = PreprocessCache(root=pre, long_side=128)
    _boxes(pc, images)  # preprocess first, so both processes only embed
    args = (str(tiny), [str(p) for p in images], str(root), str(pre))
    with mp.get_context("spawn").Pool(2) as pool:
        done = pool.map(_fill, [args, args])
    assert sorted(done) == [0, 9]  # one process computed everything, the other waited and read it
    fc = FeatureCache(BackboneConfig(name_or_path=str(tiny)), crop_size=28, preprocess=pc, root=root)
    rows = sum(len(np.load(s)["keys"]) for s in fc.store.shards())
    assert rows == 9 == len(fc.store)


def test_frozen_preset_uses_the_projects_ssl_checkpoint_when_it_is_there(tmp_path, monkeypatch):
    from awm_lib import paths
    from awm_lib.train.config import make_config

    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)  # a project without checkpoints/
    monkeypatch.chdir(tmp_path)
    assert make_config("frozen").model.backbone.name_or_path is None  # the random ViT-S/14
    ssl = tmp_path / "checkpoints" / "awm-dino-cpu"
    save_tiny_dinov2(ssl, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    cfg = make_config("frozen")
    assert cfg.model.backbone.name_or_path == "checkpoints/awm-dino-cpu"
    r = resolve(cfg.model.backbone)
    assert r.kind == "local" and r.weights.startswith("sha256:") and r.hidden_size == 32
