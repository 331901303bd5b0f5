"""Measurements the benchmarks share: the device's matmul peak, FLOPs and kernel counts of a step, and which
attention kernel ran. Not part of the library (the scripts put this folder on ``sys.path``)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

#: aten kernels behind ``F.scaled_dot_product_attention`` and the backend each one is.
SDPA_BACKENDS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "fused (other backend)",
}


def sync(device: torch.device) -> None:
    """Wait until ``device`` has run the queued work (timings end there); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                       repeats: int = 10, budget_s: float = 10.0) -> float:
    """Best ``torch.mm`` throughput of ``n x n`` matrices in ``dtype`` (TFLOP/s): ``repeats`` timed calls, fewer
    once ``budget_s`` is spent (bf16 without matrix units is far slower than fp32 on a CPU). Default size:
    8192 on a GPU, 2048 (fp32) or 1024 (other types) on a CPU."""
    if n is None:
        n = 8192 if device.type == "cuda" else (2048 if dtype == torch.float32 else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # first call: library initialisation
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return 2 * n**3 / best / 1e12


class _OpCounter(TorchDispatchMode):
    """Counts aten calls by name; ``kernels`` leaves out views (no kernel runs for those)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()
        self.kernels = 0
        self.uncounted_attention_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.calls[name] += 1
        if not func.is_view and name not in ("detach", "_local_scalar_dense"):
            self.kernels += 1
        if name.startswith("_scaled_dot_product_flash_attention_for_cpu"):
            # FlopCounterMode has no formula for the CPU kernel: Q K^T and P V are 4 B H N^2 d forward and
            # twice that backward (model FLOPs: the backward's recomputation is not counted)
            b, h, n, d = args[1 if name.endswith("backward") else 0].shape
            self.uncounted_attention_flops += (8 if name.endswith("backward") else 4) * b * h * n * n * d
        return func(*args, **(kwargs or {}))


def attention_backends(fn: Callable[[], object]) -> list[str]:
    """The SDPA backends ``fn()`` ran (from the aten kernels dispatched), e.g. ``["flash"]``; ``[]`` if none."""
    with _OpCounter() as counter:
        fn()
    found = {SDPA_BACKENDS.get(name, name) for name in counter.calls
             if "scaled_dot_product" in name and not name.endswith("backward")}
    return sorted(found - {"scaled_dot_product_attention"})


def kernels_per_call(fn: Callable[[], object]) -> int:
    """Number of non-view aten kernels ``fn()`` dispatches: on a GPU each is (about) one launch, so this is the
    step's launch overhead in a unit a CPU can count."""
    with _OpCounter() as counter:
        fn()
    return counter.kernels


def flops_per_call(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()``: ``FlopCounterMode`` (matmuls, convolutions, SDPA on CUDA) plus the CPU SDPA kernel's
    attention matmuls, which it does not count."""
    with FlopCounterMode(display=False) as counter, _OpCounter() as ops:
        fn()
    return counter.get_total_flops() + ops.uncounted_attention_flops
