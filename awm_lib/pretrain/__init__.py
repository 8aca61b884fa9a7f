"""Self-supervised pretraining of a DINOv2-architecture ViT on mammograms (DINO + iBOT).

Modules, in the order data flows through them:

- :mod:`~awm_lib.pretrain.tissue`  -- the tissue bank: breast-cropped images in one compact array
- :mod:`~awm_lib.pretrain.augment` -- multi-crop views inside the breast mask, mammogram augmentations
- :mod:`~awm_lib.pretrain.dino`    -- head with prototypes, DINO and iBOT losses, centering, EMA, schedules
- :mod:`~awm_lib.pretrain.config`  -- ``PretrainConfig``, the named presets, ``key=value`` overrides
- :mod:`~awm_lib.pretrain.loop`    -- ``pretrain(cfg, out_dir)``: student, EMA teacher, checkpoints
- :mod:`~awm_lib.pretrain.card`    -- the model card written beside the weights
- :mod:`~awm_lib.pretrain.probe`   -- k-NN / linear probes on mini-MIAS RoI crops, folds by woman

(Figures of a pretrained backbone: :mod:`awm_lib.book.pretrain_figures`.)

The saved backbone loads with ``transformers.Dinov2Model.from_pretrained(path)``.
"""

from awm_lib.pretrain.loop import PRESETS, PretrainConfig, preset_config, pretrain

__all__ = ["PRESETS", "PretrainConfig", "preset_config", "pretrain"]
