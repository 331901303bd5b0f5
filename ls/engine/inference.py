"""The single inference loop: a model over a loader -> per-cycle outputs.

Used by the trainer's evaluation, by ``ls.evaluate``, ``ls.predict``, the figures and the reports (through
``ls.inference``, which adds loading a model from a checkpoint). Batches are the dicts of ``ls.data``:
``spec``, ``meta`` (``{<factor>: ids, "cont": ...}``), ``label``, ``filename``, ``cycle_index``, ``pid``.

Outputs are sorted by (filename, cycle index) and, under DDP, gathered from every rank with the repeats a
``DistributedSampler`` adds removed, so they do not depend on the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ls.engine.distributed import DistContext, dedupe_by_index, gather_arrays
from ls.engine.precision import FP32, Precision

#: ``info_fn(info, batch) -> {name: array [B, ...] or nested dict of those}``: what to keep of ``return_info``.
InfoFn = Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]


@dataclass
class InferenceOutputs:
    """Per-cycle outputs of one pass (``N`` cycles, sorted by filename then cycle index).

    ``logits [N, label_dim]`` float32, ``labels [N]`` or ``[N, 2]``, ``meta`` ``{<factor>: ids [N]}`` (the
    categorical metadata, e.g. for per-device metrics), ``filename``, ``cycle_index``, ``pid`` ``[N]``, and
    ``extra``: whatever ``info_fn`` collected, concatenated over batches.
    """

    logits: np.ndarray
    labels: np.ndarray
    meta: dict[str, np.ndarray]
    filename: np.ndarray
    cycle_index: np.ndarray
    pid: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.logits)


def to_device(batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(spec, meta)`` of a batch on ``device`` (asynchronous copies from pinned memory)."""
    spec = batch["spec"].to(device, non_blocking=True)
    meta = {k: v.to(device, non_blocking=True) for k, v in batch.get("meta", {}).items()}
    return spec, meta


def _to_numpy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
    return np.asarray(value)


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], Mapping):
        return {k: _concat([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        key = f"{prefix}\x1f{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return out


def _unflatten(flat: Mapping[str, np.ndarray], keys: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flat_key, value in flat.items():
        parts = flat_key.split("\x1f")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _restore_keys(out, keys)


def _restore_keys(tree: dict, like: Mapping[str, Any]) -> dict:
    # keys went through str() while flattening (FiLM parameters are keyed by int layer): restore them
    out = {}
    for k in like:
        v = tree[str(k)]
        out[k] = _restore_keys(v, like[k]) if isinstance(like[k], Mapping) else v
    return out


def sort_outputs(arrays: dict[str, np.ndarray], ctx: DistContext | None = None) -> dict[str, np.ndarray]:
    """Gather per-rank arrays (DDP), drop the sampler's repeats and sort by (filename, cycle index)."""
    if ctx is not None and ctx.enabled:
        arrays = gather_arrays(arrays, ctx)
    key = np.array([f"{f}\x00{int(c):09d}" for f, c in zip(arrays["filename"], arrays["cycle_index"])])
    out = dedupe_by_index({**arrays, "\x00key": key}, key="\x00key")
    out.pop("\x00key")
    return out


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader: Any,
    device: torch.device | str = "cpu",
    *,
    precision: Precision = FP32,
    max_batches: int | None = None,
    info_fn: InfoFn | None = None,
    ctx: DistContext | None = None,
) -> InferenceOutputs:
    """Run ``model`` (switched to eval mode) over ``loader``.

    Args:
        precision: autocast of the forward pass (the run's mixed precision on CUDA).
        max_batches: stop after this many batches (smoke tests).
        info_fn: when given, the forward runs with ``return_info=True`` and ``info_fn(info, batch)`` picks what
            to keep per batch (arrays of ``B`` rows, possibly nested dicts); kept in ``InferenceOutputs.extra``.
        ctx: the DDP context; outputs of all ranks are gathered on every rank.
    """
    model.eval()
    dev = torch.device(device)
    logits_parts: list[torch.Tensor] = []
    host: dict[str, list] = {"labels": [], "filename": [], "cycle_index": [], "pid": []}
    meta_parts: dict[str, list] = {}
    extra_parts: list[Any] = []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        spec, meta = to_device(batch, dev)
        with precision.autocast(dev.type):
            if info_fn is None:
                logits = model(spec, meta)
            else:
                logits, info = model(spec, meta, return_info=True)
                extra_parts.append(_to_numpy(info_fn(info, batch)))
        logits_parts.append(logits.detach().float())  # stays on the device: one copy to the host at the end
        host["labels"].append(np.asarray(batch["label"]))
        host["filename"].append(np.asarray(batch["filename"], dtype=object))
        host["cycle_index"].append(np.asarray(batch["cycle_index"]))
        host["pid"].append(np.asarray(batch["pid"], dtype=object))
        for key, value in batch.get("meta", {}).items():
            if not value.is_floating_point():  # categorical ids (cont is not an output)
                meta_parts.setdefault(key, []).append(value.numpy())
    if not logits_parts:
        raise ValueError("the loader yielded no batches")
    arrays = {k: np.concatenate(v) for k, v in host.items()}
    arrays["logits"] = torch.cat(logits_parts).cpu().numpy()
    arrays.update({f"meta\x1f{k}": np.concatenate(v) for k, v in meta_parts.items()})
    extra_like = _concat(extra_parts) if extra_parts else {}
    arrays.update({f"extra\x1f{k}": v for k, v in _flatten(extra_like).items()})
    arrays = sort_outputs(arrays, ctx)
    meta_out = {k.split("\x1f", 1)[1]: arrays.pop(k) for k in list(arrays) if k.startswith("meta\x1f")}
    extra_flat = {k.split("\x1f", 1)[1]: arrays.pop(k) for k in list(arrays) if k.startswith("extra\x1f")}
    return InferenceOutputs(
        logits=arrays["logits"],
        labels=arrays["labels"],
        meta=meta_out,
        filename=arrays["filename"],
        cycle_index=arrays["cycle_index"].astype(np.int64),
        pid=arrays["pid"],
        extra=_unflatten(extra_flat, extra_like) if extra_flat else {},
    )


__all__ = ["InferenceOutputs", "InfoFn", "run_inference", "sort_outputs", "to_device"]
