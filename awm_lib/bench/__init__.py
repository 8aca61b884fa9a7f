"""The benchmark: how fast each configuration trains and infers, and why.

* :mod:`~awm_lib.bench.timing` - honest timers (CUDA events, warm-up), peak memory,
  the device's measured matmul peak (the denominator of MFU).
* :mod:`~awm_lib.bench.configs` - the named configurations and their analytic FLOPs
  (from :mod:`awm_lib.model.cost`, the tokenization chapter's count).
* :mod:`~awm_lib.bench.data` - synthetic device tensors, the cache-backed loader,
  the reference implementation's per-item CPU pipeline.
* :mod:`~awm_lib.bench.pipeline` - :func:`run_config`: forward, training step,
  end to end, inference with the proposer, profile.
* :mod:`~awm_lib.bench.results` - ``results/bench.json``, merged per (device, config).
* :mod:`~awm_lib.bench.gpu_run` - the one prepared GPU run (``scripts/gpu_run.sh``)
  and bringing its results home (``python -m awm_lib gpu-import``).

Command line: ``python -m awm_lib bench --config paper --device cuda``.

The names below are imported on first use, so ``import awm_lib.bench.gpu_run``
(called many times by ``scripts/gpu_run.sh``) does not pay for torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CONFIGS": "configs", "BenchConfig": "configs", "get_config": "configs", "tiny": "configs",
    "run_config": "pipeline",
    "load_results": "results", "merge_runs": "results", "write_results": "results",
    "MatmulPeak": "timing", "Timing": "timing", "matmul_peak": "timing", "time_steps": "timing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"awm_lib.bench.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'awm_lib.bench' has no attribute {name!r}")
