"""Training and evaluation: one module per concept.

- :mod:`~awm_lib.train.metrics`     AUC, F1 at the validation threshold, sensitivity at FPR, bootstrap CIs
- :mod:`~awm_lib.train.config`      TrainConfig, the presets (smoke / default / paper), ``--set`` overrides
- :mod:`~awm_lib.train.dataset`     samples -> splits -> cached images + RoIs -> batches
- :mod:`~awm_lib.train.checkpoint`  safetensors + JSON, atomic, checked on load
- :mod:`~awm_lib.train.batch`       a batch to the device, the model's forward, its logits (loop and evaluate
share them)
- :mod:`~awm_lib.train.loop`        ``fit``: AdamW, warm-up + cosine, accumulation, early stopping, exact
resume
- :mod:`~awm_lib.train.distributed` DDP under torchrun
- :mod:`~awm_lib.train.evaluate`    predictions per image, metrics with CIs
- :mod:`~awm_lib.train.experiment`  ``train(cfg, out_dir)``: everything from a config, then the test split
- :mod:`~awm_lib.train.inference`   one image -> probability, RoIs with attention, overlay
- :mod:`~awm_lib.train.cached`      ``load_or_train``: the notebooks' "load if done, else train" guard
"""
