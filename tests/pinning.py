"""Pinning numbers across machines: what a test may compare exactly and what only within float32 rounding.

Seeded initial weights and the logits they give are the same on one machine from run to run, but not across
machines: another CPU (AVX2 or AVX-512, Intel or AMD) or another build of torch fills the same tensors with
values that differ in the last bits (``trunc_normal_``, for one, goes through vectorised ``erfinv``). So the
regression tests pin a tensor by its name and shape, exactly, and by a few numbers that float32 rounding moves
only in the last bits: its mean, standard deviation, minimum and maximum (computed in float64) and four entries
at fixed positions (:func:`tensor_summary`), compared within :data:`WEIGHT_ATOL` + :data:`WEIGHT_RTOL` x |value|
(:func:`summary_differences`).

Why these tolerances: one float32 ulp is 2^-23 (1.2e-7) relative. :data:`WEIGHT_RTOL` is 2^-16, 128 ulps: a few
ulps of rounding per entry (measured between this project's CPU paths: at most 9.3e-10 absolute on entries of
scale 0.02) pass with a wide margin, while a changed initialisation scheme moves a tensor's standard deviation
or its entries by percents (and a different random stream moves the sampled entries by about the tensor's
scale). :data:`WEIGHT_ATOL` (1e-6) covers statistics that are near zero (the mean of a zero-centred tensor),
where a relative tolerance means nothing.

:func:`perturb_ulps` makes "another machine": it moves every float entry of a model by a few ulps, for tests
that show the checks accept rounding-level differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: Absolute tolerance of a weight statistic or sampled entry (statistics near zero).
WEIGHT_ATOL = 1e-6
#: Relative tolerance of a weight statistic or sampled entry: 2^-16 = 128 float32 ulps.
WEIGHT_RTOL = 2.0**-16
STATS = ("mean", "std", "min", "max")


def sample_positions(n: int) -> list[int]:
    """Four fixed flat positions of a tensor of ``n`` entries (fewer when it has fewer): first, last and two
    in between."""
    return sorted({0, n // 3, (2 * n) // 3, n - 1}) if n else []


def tensor_summary(t: torch.Tensor) -> dict[str, Any]:
    """Statistics (float64) and sampled entries of one tensor; integer tensors are kept whole when small."""
    x = t.detach().cpu()
    if not (x.is_floating_point() or x.is_complex()):
        values = x.reshape(-1).tolist()
        return {"values": values} if len(values) <= 16 else {"sum": int(x.sum()), "n": len(values)}
    flat = x.reshape(-1).to(torch.float64)
    n = flat.numel()
    if n == 0:
        return {"n": 0}
    summary = {"mean": float(flat.mean()), "std": float(flat.std(unbiased=False)), "min": float(flat.min()),
               "max": float(flat.max())}
    summary["samples"] = [[i, float(flat[i])] for i in sample_positions(n)]
    return summary


def summaries(state: Mapping[str, torch.Tensor]) -> list[list]:
    """``[name, shape, summary]`` of every tensor of a state dict, in its order."""
    return [[k, list(v.shape), tensor_summary(v)] for k, v in state.items()]


def _close(got: float, want: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return abs(got - want) <= WEIGHT_ATOL + WEIGHT_RTOL * abs(want)


def summary_differences(got: list[list], recorded: list[list]) -> list[str]:
    """What differs between two :func:`summaries`: names, order and shapes exactly; numbers within
    :data:`WEIGHT_ATOL` + :data:`WEIGHT_RTOL` x |recorded|. An empty list: the same parameters."""
    names_got, names_want = [p[0] for p in got], [p[0] for p in recorded]
    if names_got != names_want:
        missing = [n for n in names_want if n not in names_got]
        extra = [n for n in names_got if n not in names_want]
        return [f"parameter names differ: missing {missing[:5]}, unexpected {extra[:5]}"
                + ("" if missing or extra else " (order)")]
    diffs = []
    for (name, shape, have), (_, want_shape, want) in zip(got, recorded):
        if list(shape) != list(want_shape):
            diffs.append(f"{name}: shape {list(shape)} vs recorded {list(want_shape)}")
            continue
        for key in want:
            if key == "samples":
                positions = [i for i, _ in want[key]]
                if [i for i, _ in have.get(key, [])] != positions:
                    diffs.append(f"{name}: sampled positions {have.get(key)} vs {want[key]}")
                    continue
                for (i, a), (_, b) in zip(have[key], want[key]):
                    if not _close(a, b):
                        diffs.append(f"{name}[{i}]: {a!r} vs recorded {b!r}")
            elif key in STATS:
                if not _close(have[key], want[key]):
                    diffs.append(f"{name}: {key} {have[key]!r} vs recorded {want[key]!r}")
            elif have.get(key) != want[key]:
                diffs.append(f"{name}: {key} {have.get(key)!r} vs recorded {want[key]!r}")
    return diffs


def perturb_ulps(module_or_state: torch.nn.Module | Mapping[str, torch.Tensor], ulps: int, seed: int = 0) -> None:
    """Move every float32 entry of a model's state (in place) by a random whole number of ulps in
    ``[-ulps, ulps]``: what another CPU or build does to seeded weights. Uses its own generator, so the global
    torch and numpy random streams are untouched."""
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for v in state.values():
            if v.dtype != torch.float32 or v.numel() == 0:
                continue
            steps = torch.from_numpy(rng.integers(-ulps, ulps + 1, size=tuple(v.shape), dtype=np.int32))
            moved = (v.view(torch.int32) + steps).view(torch.float32)
            keep = ~torch.isfinite(v) | (v == 0)  # zeros and non-finite entries stay as they are
            v.copy_(torch.where(keep, v, moved))
