"""Predict respiratory-cycle classes of a new recording with a trained checkpoint.

    python -m ls.predict --checkpoint best.pt --wav rec.wav --meta device=Meditron --meta site=Tc [--meta age=70]
        [--cycles rec.txt | --window 3 [--hop 1.5]] [--format json|csv] [--out preds.json]

(``--device``, ``--site``, ``--age``, ``--bmi`` are shorthands for the ICBHI metadata.)

Cycles come from an ICBHI-style annotation (``start end [crackles wheezes]`` per line, seconds) or from a
sliding window over the whole recording. Features and metadata are computed exactly as in training (the
checkpoint's audio config and metadata encoder); a factor value never seen in training (e.g. a new device) is
encoded as the reserved 'unknown' id, with a warning. Output: one row per cycle with class probabilities and the class
predicted with the checkpoint's decision thresholds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ls.utils.io import atomic_write_text

log = logging.getLogger(__name__)


class PredictionError(ValueError):
    """The recording or the cycle specification cannot be predicted on; the message says why."""


def read_cycles_file(path: str | Path) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` per non-empty line of an ICBHI-style annotation (whitespace-separated
    ``start end`` plus optional label columns, which are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionError(f"cycles file not found: {path}")
    cycles = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            start, end = float(fields[0]), float(fields[1])
        except (IndexError, ValueError):
            raise PredictionError(f"{path}:{lineno}: expected 'start end [crackles wheezes]' in seconds, "
                                  f"got {line.strip()!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise PredictionError(f"{path}:{lineno}: cycle bounds must satisfy 0 <= start < end, got {start}, {end}")
        cycles.append((start, end))
    if not cycles:
        raise PredictionError(f"{path}: no cycles in the file")
    return cycles


def sliding_windows(duration: float, window: float, hop: float | None = None) -> list[tuple[float, float]]:
    """Windows ``[t, t + window)`` every ``hop`` seconds (default: ``window``, no overlap) covering the
    recording; when the last full window stops short of the end, one more window ends exactly at the end."""
    hop = window if hop is None else hop
    if window <= 0 or hop <= 0:
        raise PredictionError(f"--window and --hop must be positive, got window={window}, hop={hop}")
    if duration < window:
        raise PredictionError(f"recording is {duration:.3f} s long, shorter than the {window} s window")
    n = math.floor((duration - window) / hop + 1e-9) + 1
    starts = [round(i * hop, 6) for i in range(n)]
    if starts[-1] + window < duration - 1e-6:
        starts.append(round(duration - window, 6))
    return [(s, round(s + window, 6)) for s in starts]


def recording_duration(wav: str | Path) -> float:
    """Seconds of audio in ``wav``; unreadable or empty files raise an error naming the file."""
    from ls.data.audio import read_audio

    try:
        wave, sr = read_audio(wav)
    except ValueError as exc:  # AudioError: missing, truncated, not audio, empty
        raise PredictionError(str(exc)) from exc
    return len(wave) / sr


def predict_recording(
    ctx: Any,
    wav: str | Path,
    metadata: Mapping[str, Any] | None = None,
    cycles: Sequence[tuple[float, float]] | None = None,
    window: float | None = None,
    hop: float | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Per-cycle predictions of one recording.

    Args:
        ctx: ``ls.inference.load_for_inference(checkpoint)``.
        metadata: the recording's metadata by name: each categorical factor of the checkpoint's data (ICBHI:
            ``device``, ``site``) and continuous feature (``age``, ``bmi``; ICBHI also ``child_weight``,
            ``child_height``). Missing values are imputed as in training (factors: the unknown id, warned).
        cycles: ``(start_s, end_s)`` per cycle; or None with ``window`` (sliding windows); or neither: the whole
            recording as one cycle.

    Returns:
        One row per cycle: ``cycle, start, end, duration``, ``p_<class>`` per class (and the raw sigmoid
        outputs for sigmoid models), ``pred_class``.
    """
    from ls.data.features import features_for_recording
    from ls.engine.predict_rules import predict_classes, probabilities
    from ls.inference import probability_columns, run_inference
    from ls.types import UNKNOWN_ID

    cfg = ctx.checkpoint_cfg
    metadata = dict(metadata or {})
    duration = recording_duration(wav)
    min_duration = cfg.audio.frame_length / 1000.0  # at least one analysis frame
    if duration < min_duration:
        raise PredictionError(f"{wav}: recording is {duration * 1000:.1f} ms long; at least "
                              f"{cfg.audio.frame_length:.0f} ms (one analysis frame) is needed")
    if cycles is None:
        cycles = sliding_windows(duration, window, hop) if window is not None else [(0.0, duration)]
    late = [i for i, (s, _) in enumerate(cycles) if s >= duration]
    if late:
        raise PredictionError(f"{wav}: cycle(s) {late[:5]} start after the end of the recording ({duration:.3f} s)")

    encoder = ctx.encoder
    if encoder is not None:
        for factor in encoder.factor_names:
            vocab = encoder.vocabulary(factor)
            value = metadata.get(factor)
            if value is None or str(value) not in vocab[UNKNOWN_ID + 1:]:
                shown = "not given" if value is None else f"{value!r} was never seen in training"
                warnings.warn(f"{factor}: {shown} (known: {', '.join(vocab[1:])}); it is encoded as the "
                              f"'unknown' {factor}", stacklevel=2)
    spec = features_for_recording(wav, cycles, cfg.audio, cfg.dataset.h, cfg.dataset.w, ctx.normalizer)
    meta: dict[str, torch.Tensor] = {}
    if encoder is not None:  # every cycle at once: [N] ids per factor, [N, C] continuous features
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown values were reported above
            meta = encoder.encode_one(duration=[e - s for s, e in cycles], **metadata)
    items = [{"spec": spec[i], "meta": {k: v[i] for k, v in meta.items()}, "label": 0, "filename": str(wav),
              "cycle_index": i, "pid": ""} for i in range(len(cycles))]
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False)
    out = run_inference(ctx.model, loader, ctx.device)
    probs = probabilities(out.logits, ctx.mode)
    pred = predict_classes(probs, ctx.mode, ctx.thresholds)
    table = pd.DataFrame({
        "cycle": np.arange(len(cycles)),
        "start": [s for s, _ in cycles],
        "end": [e for _, e in cycles],
        "duration": [e - s for s, e in cycles],
    })
    for name, values in probability_columns(probs, ctx.mode, ctx.class_names).items():
        table[name] = values
    table["pred_class"] = [ctx.class_names[c] for c in pred]
    return table


def to_json(table: pd.DataFrame, ctx: Any, wav: str | Path, metadata: Mapping[str, Any]) -> str:
    payload = {
        "wav": str(wav),
        "checkpoint": str(ctx.path),
        "variant": ctx.variant,
        "metadata": dict(metadata),
        "class_names": ctx.class_names,
        "thresholds": ctx.thresholds,
        "decision_rule": ctx.mode.decision_rule,
        "cycles": table.to_dict(orient="records"),
    }
    return json.dumps(payload, indent=2) + "\n"


def parse_metadata(pairs: Sequence[str]) -> dict[str, str | float]:
    """``["device=Meditron", "age=63"]`` -> ``{"device": "Meditron", "age": 63.0}`` (numbers become floats)."""
    out: dict[str, str | float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PredictionError(f"--meta {pair!r}: expected NAME=VALUE, e.g. --meta device=Meditron")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--wav", required=True, help="the recording (any rate, mono or multi-channel)")
    p.add_argument("--meta", action="append", default=[], metavar="NAME=VALUE",
                   help="the recording's metadata, repeatable: each factor and continuous feature of the "
                        "checkpoint's data, e.g. --meta device=Meditron --meta site=Tc --meta age=63")
    p.add_argument("--device", help="ICBHI shorthand for --meta device=...: the stethoscope (e.g. Meditron, "
                                    "AKGC417L, LittC2SE, Litt3200); the compute device is --compute-device")
    p.add_argument("--site", help="ICBHI shorthand for --meta site=... (Tc, Al, Ar, Pl, Pr, Ll, Lr)")
    p.add_argument("--age", type=float, default=None, help="shorthand for --meta age=... (years)")
    p.add_argument("--bmi", type=float, default=None, help="shorthand for --meta bmi=... (kg/m^2)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cycles", help="ICBHI-style annotation: 'start end [crackles wheezes]' per line")
    src.add_argument("--window", type=float, help="sliding window length in seconds")
    p.add_argument("--hop", type=float, default=None, help="sliding window hop in seconds (default: --window)")
    p.add_argument("--format", default="json", choices=("json", "csv"))
    p.add_argument("--out", default=None, help="output file (default: stdout)")
    p.add_argument("--compute-device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the model (not the stethoscope: that is --device / --meta device=)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ls.engine.checkpoint import CheckpointError
    from ls.inference import load_for_inference

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        metadata = parse_metadata(args.meta)
        for name in ("device", "site", "age", "bmi"):
            if getattr(args, name) is not None:
                metadata[name] = getattr(args, name)
        ctx = load_for_inference(args.checkpoint, None, args.compute_device)
        cycles = read_cycles_file(args.cycles) if args.cycles else None
        table = predict_recording(ctx, args.wav, metadata, cycles, args.window, args.hop)
    except (PredictionError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = (to_json(table, ctx, args.wav, metadata) if args.format == "json"
            else table.to_csv(index=False, float_format="%.6f"))
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
