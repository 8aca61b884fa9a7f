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

Command line: ``python -m awm_lib bench --config paper --device cuda``.
"""

from awm_lib.bench.configs import CONFIGS, BenchConfig, get_config, tiny
from awm_lib.bench.pipeline import run_config
from awm_lib.bench.results import load_results, merge_runs, write_results
from awm_lib.bench.timing import MatmulPeak, Timing, matmul_peak, time_steps

__all__ = [
    "CONFIGS", "BenchConfig", "MatmulPeak", "Timing", "get_config", "load_results", "matmul_peak",
    "merge_runs", "run_config", "tiny", "time_steps", "write_results",
]
