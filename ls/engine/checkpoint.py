"""Checkpoints: plain dicts of tensors and Python values, written atomically, read with ``weights_only=True``.

The layout lives here and nowhere else. A checkpoint is everything needed to *predict* with a trained model
(weights, resolved config, variant, fitted metadata encoder with its feature statistics, metadata spec, class
names, output mode, decision thresholds, library version) and, for ``last.pt``, everything needed to *resume*
training bit-for-bit on CPU (optimiser, scheduler, grad-scaler, epoch, best metric and thresholds,
early-stopping counter, metric history, RNG states). It contains no pickled classes, so
``torch.load(path, weights_only=True)`` reads it (the original scripts' files did not: docs/fixes.md 11.6-7).

Layout (keys of the dict, format 2)::

    format, version, variant, config, model, metadata_encoder, metadata_spec, class_names, member, plugins,
    thresholds, output_mode, epoch, best, best_epoch, selection,
    trainer ({"bad_epochs", "history": [per-epoch metric dicts]}),
    -- and in last.pt, for resuming -- optimizer, scheduler, scaler, rng

``variant``, ``config``, ``metadata_encoder``, ``metadata_spec``, ``class_names``, ``member`` (which member
of a group of runs this is, e.g. ``{"seed": 43}`` or ``{"seed": 0, "fold": 2, "k": 5}``; None for a run of its
own; absent in older files) and ``plugins`` (where each variant or reader that is not built into ls came from,
``ls.utils.plugins.requirements``; checked by :func:`read_checkpoint`; absent in older files) come from the
application (opaque here); the rest from the trainer. ``best.pt`` carries the history of every epoch run
(rewritten once at the end of training), so figures such as training curves need only that file.

Format 1 (ls 0.1) differs only in the config's keys and the encoder state; ``ls.inference`` reads it for
evaluation and prediction; resuming needs format 2.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ls.engine.distributed import unwrap
from ls.utils import plugins
from ls.utils.io import atomic_torch_save, describe_kind, file_kind, torch_load_problem

#: Bumped when the checkpoint layout changes incompatibly.
CHECKPOINT_FORMAT = 2
#: Formats this version reads (1: ls 0.1; ``ls.inference`` upgrades its config for prediction).
READABLE_FORMATS = (1, 2)
#: Keys every checkpoint written by ls carries (the prediction part).
REQUIRED_KEYS = (
    "format",
    "version",
    "variant",
    "config",
    "model",
    "metadata_encoder",
    "metadata_spec",
    "class_names",
    "thresholds",
)
#: What the application supplies to every checkpoint of a run.
APPLICATION_KEYS = ("variant", "config", "metadata_encoder", "metadata_spec", "class_names", "member", "plugins")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the run that wants to use it."""


# -- RNG state --------------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states as tensors and plain lists."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        # NumPy's key array becomes a plain list so the file stays weights_only-readable.
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- weights ----------------------------------------------------------------------------------------
def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A *copy* of the weights on CPU: later optimiser steps cannot alias it (fix of 11.1-2)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


# -- layout -----------------------------------------------------------------------------------------
def make_checkpoint(
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    thresholds: Any,
    output_mode: dict[str, Any] | None,
    epoch: int,
    best: float,
    best_epoch: int,
    selection: str,
    trainer_state: dict[str, Any],
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict: ``meta`` holds the application's entries (``APPLICATION_KEYS``); ``resume``
    (``optimizer``, ``scheduler``, ``scaler``, ``rng``) makes it a ``last.pt``."""
    import ls

    state = {
        "format": CHECKPOINT_FORMAT,
        "version": ls.__version__,
        **{k: meta.get(k) for k in APPLICATION_KEYS},
        "model": dict(weights),
        "thresholds": _plain(thresholds),
        "output_mode": output_mode,
        "epoch": epoch,
        "best": best,
        "best_epoch": best_epoch,
        "selection": selection,
        "trainer": trainer_state,
    }
    state["class_names"] = list(state["class_names"] or [])
    if resume is not None:
        state.update(resume)
    return state


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# -- files ------------------------------------------------------------------------------------------
def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically (temp file + rename): a crash never leaves a truncated checkpoint."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"refusing to write {path}: checkpoint lacks key(s) {', '.join(missing)}")
    path = Path(path)
    atomic_torch_save(state, path)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
                    ) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; errors name the file and what is wrong.

    The plugins its variant and readers came from (``plugins``, ``ls.utils.plugins.requirements``) must be
    loaded: a missing one is an error saying which module to load and how. The file imports nothing itself.
    ``mmap``: map the tensors instead of reading them (a look at the metadata only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        kind = file_kind(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(f"{path} is not a checkpoint: it is {describe_kind(kind)}, expected a best.pt or "
                              "last.pt written by ls")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True,
                           **({"mmap": True} if mmap and kind == "torch-zip" else {}))
    except Exception as exc:  # noqa: BLE001 - any failure to load means: not a usable checkpoint
        # torch's own message advises weights_only=False, i.e. running the file's code: never passed on
        raise CheckpointError(f"{path} is not a readable ls checkpoint: {torch_load_problem(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected an ls checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not an ls checkpoint: missing key(s) {', '.join(missing)} "
            "(checkpoints of the original scripts hold only 'model_state_dict' and cannot be used)"
        )
    if state["format"] not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']} (written by ls {state.get('version', '?')}); this "
            f"version of ls ({_version()}) reads formats {', '.join(map(str, READABLE_FORMATS))}: use the ls "
            "version that wrote it"
        )
    plugins.require(state.get("plugins"), f"checkpoint {path}")
    return state


def _version() -> str:
    import ls

    return ls.__version__


def check_resume_state(state: dict[str, Any], variant: str, path: str | Path) -> None:
    """Raise unless ``state`` is a ``last.pt`` of this checkpoint format for ``variant`` (its config aside)."""
    if "optimizer" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} holds no optimiser/epoch state: it is a best.pt, resume from last.pt")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"cannot resume from {path}: it has checkpoint format {state['format']} (ls {state.get('version', '?')}) "
            f"and resuming needs format {CHECKPOINT_FORMAT}; finish the run with that ls version or start a new "
            "run (its best.pt still loads for evaluation and prediction)"
        )
    if state["variant"] != variant:
        raise CheckpointError(
            f"cannot resume from {path}: it was trained as variant {state['variant']!r}, this run is {variant!r}"
        )


def find_best_beside(last_path: str | Path) -> Path | None:
    """``best.pt`` in the folder of ``last.pt`` (where the trainer writes both), if present."""
    best = Path(last_path).with_name("best.pt")
    return best if best.is_file() else None


__all__ = [
    "CHECKPOINT_FORMAT",
    "READABLE_FORMATS",
    "CheckpointError",
    "capture_rng_state",
    "check_resume_state",
    "cpu_state_dict",
    "find_best_beside",
    "make_checkpoint",
    "read_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "unwrap",
]
