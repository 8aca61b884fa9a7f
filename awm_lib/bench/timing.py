"""Timing that tells the truth: warm-up, synchronisation, peaks and the device's own speed limit.

Three traps make naive GPU timings wrong, and this module avoids each:

* **Asynchrony.** A CUDA call returns as soon as the work is *queued*; the GPU
  runs it later. ``time.perf_counter()`` around a step measures the queueing.
  We record CUDA *events* on the stream before and after the work and read the
  elapsed time between them once the stream has finished
  (``torch.cuda.synchronize``), which is the time the GPU actually spent.
* **Warm-up.** The first steps pay for cuDNN/cuBLAS autotuning, memory-pool
  growth and (with ``torch.compile``) compilation. They are run and discarded.
* **Noise.** We report the median over the timed steps (robust to a stray
  hiccup) next to the mean.

Peak memory comes from the caching allocator (``torch.cuda.max_memory_allocated``);
on the CPU we report the process's peak resident set size from ``getrusage``
(the whole process, an upper bound on what the model needed).

Model FLOP utilisation (MFU) needs a denominator. Data-sheet peaks assume
perfect conditions (and for H100 often quote sparsity), so we *measure* the
device: large square matrix products in bf16 (fp32 on the CPU), the most
favourable workload there is. ``MFU = achieved FLOP/s / measured peak``.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: torch.device | str) -> None:
    """Wait until all queued work on ``device`` has finished (no-op on the CPU)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of the timed steps (warm-up steps excluded)."""

    times_s: list[float]
    warmup: int

    @property
    def steps(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    def summary(self) -> dict:
        return {
            "steps": self.steps,
            "warmup": self.warmup,
            "median_s": self.median_s,
            "mean_s": self.mean_s,
            "min_s": self.min_s,
        }


def time_steps(
    fn: Callable[[], object], device: torch.device | str, steps: int = 10, warmup: int = 3
) -> Timing:
    """Call ``fn`` ``warmup`` times (discarded), then ``steps`` times, timing each call.

    On CUDA each step is bracketed by events recorded on the current stream;
    all events are read after one final synchronisation, so timing adds no
    host-device round trip *between* steps (the GPU queue stays full, like in
    training). On the CPU, ``perf_counter`` around each call.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    if is_cuda(device):
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(steps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(steps)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]  # ms -> s
    else:
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return Timing(times, warmup)


def time_wall(
    fn: Callable[[], object], device: torch.device | str, steps: int = 10, warmup: int = 3
) -> Timing:
    """Like :func:`time_steps` but wall-clock over ALL ``steps`` (synchronised at both ends).

    For loops whose host side matters (a data loader feeding the GPU): the GPU
    time of each step would hide the time the GPU sat waiting for data.
    Every entry of ``times_s`` is the same average.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    per = (time.perf_counter() - t0) / steps
    return Timing([per] * steps, warmup)


# --- memory -----------------------------------------------------------------------------
def reset_peak_memory(device: torch.device | str) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """Peak bytes held by tensors on a CUDA device since the last reset; on the CPU the
    process's peak resident set size (``ru_maxrss``, KiB on Linux), or None if unknown."""
    if is_cuda(device):
        return int(torch.cuda.max_memory_allocated(device))
    try:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (OSError, ValueError):  # pragma: no cover
        return None


# --- the device's speed limit -----------------------------------------------------------------
@dataclass
class MatmulPeak:
    """Best measured throughput of ``n x n @ n x n`` products in ``dtype``."""

    tflops: float
    n: int
    dtype: str
    device: str

    def as_dict(self) -> dict:
        return asdict(self)


def matmul_peak(device: torch.device | str, n: int | None = None, dtype: torch.dtype | None = None,
                steps: int | None = None, warmup: int = 5) -> MatmulPeak:
    """Measure the device's dense matrix-multiply peak in TFLOP/s (2 n^3 FLOPs per product).

    Defaults: bf16 with n = 8192 on CUDA (large enough to saturate the tensor
    cores), fp32 with n = 512 on the CPU (what our CPU runs use; a few seconds).
    We keep the *best* step (the peak is what the hardware can do, not what it
    did on average while sharing a machine).
    """
    device = torch.device(device)
    cuda = is_cuda(device)
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = n or (8192 if cuda else 512)
    steps = steps or (20 if cuda else 60)  # on a shared CPU, more chances to catch a quiet moment
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    timing = time_steps(lambda: torch.mm(a, b, out=out), device, steps=steps, warmup=warmup)
    return MatmulPeak(2.0 * n**3 / timing.min_s / 1e12, n, str(dtype).replace("torch.", ""), str(device))


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (how busy the machine was), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None
