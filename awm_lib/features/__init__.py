"""RoI features of a frozen backbone: every RoI crop embedded once, cached, shared by every run.

After RoI selection an image is K = topk + 1 crops. With a frozen backbone each
crop's embedding never changes, so we compute it once and keep it; the RoI
classifier's position codes, transformer, pooling, head and losses then train on
(B, K, D) tensors in seconds on a CPU (the ``frozen`` training preset).

Modules (lowest first): :mod:`~awm_lib.features.key` (what a token depends on, as
hashes), :mod:`~awm_lib.features.store` (append-only atomic shards under
``.cache/features``), :mod:`~awm_lib.features.backbones` (random / the project's
SSL checkpoint / DINOv2 from the hub, and their cache identities),
:mod:`~awm_lib.features.extract` (crops exactly as the model cuts them, one ViT
call per batch), :mod:`~awm_lib.features.cache` (the facade), and
:mod:`~awm_lib.features.config` (``TrainConfig.features``).

**Train a configuration on cached tokens** (command line or Python)::

    python -m awm_lib train --dataset mias --preset frozen --out runs/frozen-f0 [--set data.fold=2 ...]

    from awm_lib.train.config import make_config
    from awm_lib.train.experiment import train
    cfg = make_config("frozen", ["data.fold=2", "model.pooling=mean", "seed=3"], dataset="mias")
    result = train(cfg, "runs/f2-mean-s3", progress=False)   # fills the cache on first use
    result.results["auc"], result.results["backbone"]        # metrics with CIs; which weights made the tokens

Every configuration, fold, seed, chapter and widget that asks for the same
backbone, crop size, preprocessing and boxes reads the same tokens. Any other
config of the study becomes a frozen one with ``--set features.cached=true
--set data.augment=false --set optim.lr_backbone=0`` (the preset sets these).

**Get the tokens of a dataset yourself** (e.g. for a probe or a figure)::

    from awm_lib.train.tokens import build_token_datasets
    ds = build_token_datasets(cfg)            # {"train", "val", "test"}: TokenDataset
    ds["train"].tokens                        # (N, K, D) float32, rows follow ds["train"].samples
    ds["train"].records[i]["rois"]            # the K boxes; roi_mask / roi_labels / labels as usual
    ds["test"].backbone                       # name, kind, weights hash, crop size, cache folder

or, one level lower, for any images and boxes::

    from awm_lib.features import FeatureCache
    from awm_lib.data.cache import PreprocessCache
    from awm_lib.model.backbone import BackboneConfig
    fc = FeatureCache(BackboneConfig(name_or_path=None, random_arch="small"), crop_size=112,
                      preprocess=PreprocessCache(long_side=1024))
    tokens = fc.tokens(paths, boxes)          # boxes[i]: (K, 4) xyxy in preprocessed pixels -> (N, K, 384)

**Evaluate** a trained run: ``python -m awm_lib evaluate --checkpoint runs/frozen-f0
--dataset mias``, or :func:`awm_lib.train.experiment.evaluate_checkpoint`; the
checkpoint holds only the RoI head (no ViT weights); the tokens come from the cache.
With the model in hand, ``model.forward_tokens(tokens, boxes_norm, roi_mask)`` is
the forward pass (:func:`awm_lib.train.tokens.forward_token_batch` on a batch).
``python -m awm_lib predict IMAGE --checkpoint RUN`` puts the frozen ViT back in front
of the head and classifies a new image from its pixels (the same crops, the same tokens).

Several processes (the ablation's workers, a notebook) may use one cache at once: a
folder is filled under a file lock, so each token is computed once, and readers never
see a half-written shard.

**Backbones**: ``model.backbone.name_or_path`` = None (random ViT-S/14 drawn from
``features.random_seed``: identity ``random:small:0``), ``checkpoints/awm-dino-cpu``
(the project's self-supervised checkpoint; the ``frozen`` preset uses it when it
exists), or ``facebook/dinov2-small`` / ``-base`` (online, or in the Hugging Face
cache). :func:`available_backbones` lists what is here and gives one line for each
that is not. A local or hub checkpoint is identified by the sha256 of its weight files.
"""

from awm_lib.features.backbones import (
    BackboneUnavailable,
    ResolvedBackbone,
    TokenInput,
    available_backbones,
    default_ssl_checkpoint,
    resolve,
    standard_backbones,
    token_dim,
    token_input,
)
from awm_lib.features.cache import FeatureCache, FillReport
from awm_lib.features.key import CropSpec, FeatureSpec, crop_key, file_sha256
from awm_lib.features.store import TokenStore, features_root

__all__ = [
    "BackboneUnavailable",
    "CropSpec",
    "FeatureCache",
    "FeatureSpec",
    "FillReport",
    "ResolvedBackbone",
    "TokenInput",
    "TokenStore",
    "available_backbones",
    "crop_key",
    "default_ssl_checkpoint",
    "features_root",
    "file_sha256",
    "resolve",
    "standard_backbones",
    "token_dim",
    "token_input",
]
