"""Predict respiratory-cycle classes of a new recording with a trained checkpoint.

    python -m ls.predict --checkpoint best.pt --wav rec.wav --meta device=Meditron --meta site=Tc [--meta age=70]
        [--cycles rec.txt | --window 3 [--hop 1.5]] [--format json|csv] [--out preds.json]

(``--device``, ``--site``, ``--age``, ``--bmi`` are shorthands for the ICBHI metadata.)

Cycles come from an ICBHI-style annotation (``start end [crackles wheezes]`` per line, seconds) or from a
sliding window over the whole recording. Without either, a recording up to 1.5 times the model's input length
(``audio.desired_length``) is one cycle and a longer one is cut into windows of that length (the model sees
only the first ``desired_length`` seconds of any cycle). Features and metadata are computed exactly as in
training (the checkpoint's audio config and metadata encoder); a factor value never seen in training (e.g. a
new device) is encoded as the reserved 'unknown' id, with a warning. Output: one row per cycle with class
probabilities and the class predicted with the checkpoint's decision thresholds; the rule (``decision_rule``)
heads the JSON and the CSV (``# decision_rule: ...`` lines: read it with ``pandas.read_csv(path,
comment="#")``).

The prediction says when it is guessing (:class:`PredictionWarning`, printed as ``warning:`` lines and kept
in the output's ``warnings``): silent or near-silent audio, a sample rate whose Nyquist frequency is below half
the features' upper frequency, cycles longer than the model's input, and a duration or metadata value outside
the range seen in training.
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

from ls.utils.cli import add_common_options, run_command
from ls.utils.io import atomic_write_text

log = logging.getLogger(__name__)


class PredictionError(ValueError):
    """The recording or the cycle specification cannot be predicted on; the message says why."""


class PredictionWarning(UserWarning):
    """The prediction runs, but on input unlike the training data: its classes are guesses."""


#: Below this RMS level (dBFS, after DC removal) a recording or cycle counts as near-silent; real ICBHI
#: recordings lie between -11 and -35 dBFS.
SILENCE_DBFS = -60.0
#: Without --cycles/--window, recordings longer than this many model inputs are cut into windows.
AUTO_WINDOW_FACTOR = 1.5


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


def _read(wav: str | Path) -> tuple[np.ndarray, int]:
    from ls.data.audio import read_audio

    try:
        return read_audio(wav)
    except ValueError as exc:  # AudioError: missing, truncated, not audio, empty
        raise PredictionError(str(exc)) from None


def recording_duration(wav: str | Path) -> float:
    """Seconds of audio in ``wav``; unreadable or empty files raise an error naming the file."""
    wave, sr = _read(wav)
    return len(wave) / sr


def _dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x - x.mean(), dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def input_warnings(ctx: Any, wav: str | Path, wave: np.ndarray, sr: int, cycles: Sequence[tuple[float, float]],
                   metadata: Mapping[str, Any]) -> list[str]:
    """Why predictions on this input may be guesses (empty when it looks like training data)."""
    cfg = ctx.checkpoint_cfg
    notes = []
    level = _dbfs(wave)
    if level < SILENCE_DBFS:
        shown = "all samples are equal (digital silence)" if level == -math.inf else f"RMS level {level:.0f} dBFS"
        notes.append(f"{wav}: the recording is silent or near-silent ({shown}; training recordings are "
                     f"above {SILENCE_DBFS:.0f} dBFS): its predictions are guesses")
    else:
        quiet = [i for i, (s, e) in enumerate(cycles) if _dbfs(wave[int(s * sr):int(e * sr)]) < SILENCE_DBFS]
        if quiet:
            notes.append(f"{wav}: {len(quiet)} of {len(cycles)} cycle(s) are near-silent (below "
                         f"{SILENCE_DBFS:.0f} dBFS, e.g. cycle {quiet[0]}): their predictions are guesses")
    upper = cfg.audio.high_freq if cfg.audio.high_freq > 0 else cfg.audio.sample_rate / 2 + cfg.audio.high_freq
    if sr / 2 < upper / 2:
        notes.append(f"{wav}: sampled at {sr} Hz, it holds nothing above {sr / 2:.0f} Hz, but the model's "
                     f"features span {cfg.audio.low_freq:.0f}-{upper:.0f} Hz: most mel bins are empty")
    length = cfg.audio.desired_length
    long = [i for i, (s, e) in enumerate(cycles) if e - s > length + 1e-6]
    if long:
        notes.append(f"{len(long)} cycle(s) are longer than the model's input of {length:g} s (e.g. cycle "
                     f"{long[0]}, {cycles[long[0]][1] - cycles[long[0]][0]:.1f} s): only their first {length:g} s "
                     "are used")
    ranges = getattr(ctx.encoder, "ranges", None) or {}
    if "duration" in ranges:
        lo, hi = ranges["duration"]
        out = [e - s for s, e in cycles if not lo - 1e-6 <= e - s <= hi + 1e-6]
        if out:
            notes.append(f"{len(out)} cycle duration(s) (e.g. {out[0]:.2f} s) lie outside the training range "
                         f"{lo:.2f}..{hi:.2f} s")
    for name, value in metadata.items():
        if name in ranges and isinstance(value, (int, float)) and math.isfinite(value):
            lo, hi = ranges[name]
            if not lo <= value <= hi:
                notes.append(f"{name}={value:g} lies outside the training range {lo:g}..{hi:g}")
    return notes


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
            recording as one cycle, or windows of ``audio.desired_length`` when it is longer than
            ``AUTO_WINDOW_FACTOR`` times that (with a :class:`PredictionWarning`).

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
    wave, sr = _read(wav)
    duration = len(wave) / sr
    min_duration = cfg.audio.frame_length / 1000.0  # at least one analysis frame
    if duration < min_duration:
        raise PredictionError(f"{wav}: recording is {duration * 1000:.1f} ms long; at least "
                              f"{cfg.audio.frame_length:.0f} ms (one analysis frame) is needed")
    if cycles is None and window is None and duration > AUTO_WINDOW_FACTOR * cfg.audio.desired_length:
        # One cycle would be cut to its first desired_length seconds: most of the recording never seen.
        window = cfg.audio.desired_length
        warnings.warn(f"{wav}: {duration:.1f} s long, but the model takes {window:g} s; predicting "
                      f"{window:g} s sliding windows (choose with --window/--hop or --cycles)",
                      PredictionWarning, stacklevel=2)
    if cycles is None:
        cycles = sliding_windows(duration, window, hop) if window is not None else [(0.0, duration)]
    late = [i for i, (s, _) in enumerate(cycles) if s >= duration]
    if late:
        raise PredictionError(f"{wav}: cycle(s) {late[:5]} start after the end of the recording ({duration:.3f} s)")
    for note in input_warnings(ctx, wav, wave, sr, cycles, metadata):
        warnings.warn(note, PredictionWarning, stacklevel=2)

    encoder = ctx.encoder
    if encoder is not None:
        for factor in encoder.factor_names:
            vocab = encoder.vocabulary(factor)
            value = metadata.get(factor)
            if value is None or str(value) not in vocab[UNKNOWN_ID + 1:]:
                shown = "not given" if value is None else f"{value!r} was never seen in training"
                warnings.warn(f"{factor}: {shown} (known: {', '.join(vocab[1:])}); it is encoded as the "
                              f"'unknown' {factor}", PredictionWarning, stacklevel=2)
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


def to_json(table: pd.DataFrame, ctx: Any, wav: str | Path, metadata: Mapping[str, Any],
            notes: Sequence[str] = ()) -> str:
    payload = {
        "wav": str(wav),
        "checkpoint": str(ctx.path),
        "variant": ctx.variant,
        "metadata": dict(metadata),
        "class_names": ctx.class_names,
        "thresholds": ctx.thresholds,
        "decision_rule": ctx.mode.decision_rule,
        "warnings": list(notes),
        "cycles": table.to_dict(orient="records"),
    }
    return json.dumps(payload, indent=2) + "\n"


def to_csv(table: pd.DataFrame, ctx: Any, notes: Sequence[str] = ()) -> str:
    """The table as CSV under ``#`` header lines: the decision rule, the thresholds and any warnings
    (``pandas.read_csv(path, comment="#")`` skips them)."""
    thresholds = "none (argmax)" if ctx.thresholds in (None, (), []) else ", ".join(
        f"{name}={value:g}" for name, value in zip(ctx.mode.threshold_names, ctx.thresholds))
    head = [f"# decision_rule: {ctx.mode.decision_rule}", f"# thresholds: {thresholds}",
            f"# checkpoint: {ctx.path}"]
    head += [f"# warning: {' '.join(str(n).split())}" for n in notes]
    return "\n".join(head) + "\n" + table.to_csv(index=False, float_format="%.6f")


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
    src.add_argument("--window", type=float, help="sliding window length in seconds (default: the whole "
                     "recording as one cycle, or windows of the model's input length for a longer recording)")
    p.add_argument("--hop", type=float, default=None, help="sliding window hop in seconds (default: --window)")
    p.add_argument("--format", default="json", choices=("json", "csv"))
    p.add_argument("--out", default=None, help="output file (default: stdout)")
    p.add_argument("--compute-device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the model (not the stethoscope: that is --device / --meta device=)")
    add_common_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where), warnings
    ``warning:`` lines (and part of the output)."""
    from ls.inference import load_for_inference

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        metadata = parse_metadata(args.meta)
        for name in ("device", "site", "age", "bmi"):
            if getattr(args, name) is not None:
                metadata[name] = getattr(args, name)
        ctx = load_for_inference(args.checkpoint, None, args.compute_device)
        cycles = read_cycles_file(args.cycles) if args.cycles else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = predict_recording(ctx, args.wav, metadata, cycles, args.window, args.hop)
        notes = [str(w.message) for w in caught if issubclass(w.category, PredictionWarning)]
        for w in caught:  # the notes go into the output too; other libraries' warnings only to stderr
            print(f"warning: {w.message}", file=sys.stderr)
        text = (to_json(table, ctx, args.wav, metadata, notes) if args.format == "json"
                else to_csv(table, ctx, notes))
        if args.out:
            atomic_write_text(args.out, text)
        else:
            sys.stdout.write(text)
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    raise SystemExit(main())
