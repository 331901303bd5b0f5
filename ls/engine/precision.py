"""Numeric precision of a run: mixed precision (autocast) on CUDA, TF32 for fp32 matmuls, never on CPU.

``training.amp``:

- ``auto`` (or ``true``): bf16 autocast on CUDA devices with native bf16 (compute capability 8.0, Ampere, and
  later; no gradient scaler needed: bf16 has fp32's exponent range); fp16 autocast with a ``GradScaler`` on
  older GPUs (T4, V100), where torch would only emulate bf16, far slower than fp16;
- ``bf16`` / ``fp16``: that one (bf16 on a GPU without native bf16 is an error naming the device);
- ``false``: fp32.

On CPU every setting means fp32: bf16 on this project's CPUs is hundreds of times slower than fp32.
``training.tf32`` lets fp32 matmuls and convolutions on CUDA use TF32 tensor cores.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """``dtype``: the autocast dtype (None: fp32); ``scaler``: whether gradients need a ``GradScaler`` (fp16)."""

    dtype: torch.dtype | None = None
    scaler: bool = False

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")  # type: ignore[arg-type]

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """Autocast context for a forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)


FP32 = Precision()
#: The first CUDA compute capability with bf16 tensor cores (Ampere).
NATIVE_BF16_CAPABILITY = (8, 0)
#: cuBLAS workspace that makes its matmuls deterministic (the smaller ":16:8" costs speed).
CUBLAS_WORKSPACE = ":4096:8"


def native_bf16(device: torch.device) -> bool:
    """Whether CUDA ``device`` computes bf16 natively. Not ``torch.cuda.is_bf16_supported()``: by default that
    also counts emulation (True on a T4 or V100) and asks about the current device, not ``device``."""
    return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CAPABILITY


def resolve_precision(amp: bool | str, device: torch.device) -> Precision:
    """The precision ``training.amp`` means on ``device`` (see the module docstring)."""
    if device.type != "cuda" or amp is False or amp == "false":
        return FP32
    if amp in (True, "auto"):
        return Precision(torch.bfloat16) if native_bf16(device) else Precision(torch.float16, scaler=True)
    if amp == "bf16":
        if not native_bf16(device):
            major, minor = torch.cuda.get_device_capability(device)
            raise ValueError(f"training.amp is 'bf16' but {torch.cuda.get_device_name(device)} (compute capability "
                             f"{major}.{minor}) has no bf16 support; use 'fp16' or 'auto'")
        return Precision(torch.bfloat16)
    if amp == "fp16":
        return Precision(torch.float16, scaler=True)
    raise ValueError(f"training.amp must be auto, bf16, fp16, true or false; got {amp!r}")


def configure_determinism(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels (``training.deterministic``); where an op has none, a warning, not an error.

    The switch is process-wide, so ``False`` switches it off again: a later run in the same process (a study's
    next run) must not inherit an earlier run's setting. On CUDA, cuBLAS is deterministic only with a fixed
    workspace, which must be set before its first use: set here unless the environment already chose one.
    """
    if not enabled:
        torch.use_deterministic_algorithms(False)
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)


def configure_tf32(enabled: bool, device: torch.device) -> None:
    """TF32 tensor-core matmuls/convolutions for fp32 work on CUDA (no effect on CPU)."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


__all__ = ["FP32", "Precision", "configure_determinism", "configure_tf32", "native_bf16", "resolve_precision"]
