"""Predict the respiratory sounds of new recordings with a trained checkpoint or an exported ONNX model.

    python -m ls.predict --checkpoint best.pt --wav rec.wav --meta device=Meditron --meta site=Tc [--meta age=70]
        [--cycles rec.txt | --window 3 [--hop 1.5]] [--format json|csv] [--out preds.json] [--plot rec.png]
    python -m ls.predict --onnx model.onnx --wav a.wav --wav b.wav ...      # no torch needed; or --wav FOLDER

(``--device``, ``--site``, ``--age``, ``--bmi`` are shorthands for the ICBHI metadata; ``unknown`` says a value
is not known: ``--age unknown``.)

Cycles come from an ICBHI-style annotation (``start end [crackles wheezes]`` per line, seconds) or from a
sliding window over the whole recording. Without either, a recording up to 1.5 times the model's input length
(``audio.desired_length``) is one cycle and a longer one is cut into windows of that length (the model sees
only the first ``desired_length`` seconds of any cycle). Features and metadata are computed exactly as in
training (the checkpoint's audio config and metadata encoder); a factor value never seen in training (e.g. a
new device) is encoded as the reserved 'unknown' id, with a warning. Windows are predicted in batches
(``--batch-size``), so memory does not grow with their number; more than ``--max-windows`` windows for one
recording is refused before anything is computed.

Output: one row per cycle with class probabilities and the class predicted with the model's decision
thresholds, then a recording-level result (``ls.aggregate``: which sounds are present, normal/abnormal, and for
SPRSound models the record classes) and, for several recordings, a patient-level summary. The decision rule
(``decision_rule``) and the aggregation rule head the JSON and the CSV (``# ...`` lines: read it with
``pandas.read_csv(path, comment="#")``). ``--plot`` draws a timeline of each recording (``ls.viz.timeline``).

The prediction says when it is guessing (:class:`PredictionWarning`, printed as ``warning:`` lines and kept
in the output's ``warnings``): silent or near-silent audio, a sample rate whose Nyquist frequency is below half
the features' upper frequency, cycles longer than the model's input, and a duration or metadata value outside
the range seen in training. Audio with NaN or infinite samples is refused (an error naming the file).

This module imports no torch: with ``--onnx`` the whole prediction runs on onnxruntime, numpy and soundfile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
#: Most windows (or cycles) one recording may be cut into (--max-windows): 20,000 windows of a 10 s model are
#: 55 hours of audio at no overlap; a hop far below the window length is refused before anything runs.
MAX_WINDOWS = 20_000
#: Cycles per model call: memory holds one batch of padded cycles and features, whatever the recording length.
BATCH_SIZE = 16
#: Values of --meta NAME=VALUE (and --age, ...) that say "not known": factors get the unknown id, continuous
#: features the training median.
UNKNOWN_VALUES = ("unknown", "<unknown>")


def read_cycles_file(path: str | Path) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` per non-empty line of an ICBHI-style annotation (whitespace-separated
    ``start end`` plus optional label columns, which are ignored)."""
    return [(s, e) for s, e, _ in read_annotation(path)]


def read_annotation(path: str | Path) -> list[tuple[float, float, tuple[int, int] | None]]:
    """``(start_s, end_s, (crackles, wheezes) or None)`` per non-empty line of an ICBHI-style annotation."""
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
        bits = None
        if len(fields) >= 4 and fields[2] in ("0", "1") and fields[3] in ("0", "1"):
            bits = (int(fields[2]), int(fields[3]))
        cycles.append((start, end, bits))
    if not cycles:
        raise PredictionError(f"{path}: no cycles in the file")
    return cycles


def window_count(duration: float, window: float, hop: float) -> int:
    """How many windows :func:`sliding_windows` gives, computed without building them."""
    n = math.floor((duration - window) / hop + 1e-9) + 1
    return n + (1 if (n - 1) * hop + window < duration - 1e-6 else 0)


def sliding_windows(duration: float, window: float, hop: float | None = None,
                    max_windows: int = MAX_WINDOWS) -> list[tuple[float, float]]:
    """Windows ``[t, t + window)`` every ``hop`` seconds (default: ``window``, no overlap) covering the
    recording; when the last full window stops short of the end, one more window ends exactly at the end.
    More than ``max_windows`` windows is an error (raised before any is built)."""
    hop = window if hop is None else hop
    if not (math.isfinite(window) and math.isfinite(hop)) or window <= 0 or hop <= 0:
        raise PredictionError(f"--window and --hop must be positive, got window={window}, hop={hop}")
    if duration < window:
        raise PredictionError(f"recording is {duration:.3f} s long, shorter than the {window} s window")
    n = window_count(duration, window, hop)
    if n > max_windows:
        raise PredictionError(f"--window {window:g} --hop {hop:g} cuts the {duration:.1f} s recording into {n:,} "
                              f"windows, more than the limit of {max_windows:,} (--max-windows); use a larger --hop, "
                              f"e.g. {max(hop, (duration - window) / max(max_windows - 2, 1)):.3g} s")
    starts = [round(i * hop, 6) for i in range(math.floor((duration - window) / hop + 1e-9) + 1)]
    if starts[-1] + window < duration - 1e-6:
        starts.append(round(duration - window, 6))
    return [(s, round(s + window, 6)) for s in starts]


def _read(wav: str | Path) -> tuple[np.ndarray, int]:
    from ls.data.wav import read_audio

    try:
        return read_audio(wav)
    except ValueError as exc:  # AudioError: missing, truncated, not audio, empty, NaN/Inf samples
        raise PredictionError(str(exc)) from None


def recording_duration(wav: str | Path) -> float:
    """Seconds of audio in ``wav``; unreadable or empty files raise an error naming the file."""
    wave, sr = _read(wav)
    return len(wave) / sr


def _dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x - x.mean(), dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


# -- the model: a checkpoint (torch) or an exported file (onnxruntime) ------------------------------------------
class TorchModel:
    """A checkpoint (``ls.inference.InferenceContext``) behind the interface :class:`OnnxModel` offers:
    ``audio``, ``encoder``, ``mode``, ``class_names``, ``thresholds``, ``task``, ``load``, ``predict``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        cfg = ctx.checkpoint_cfg
        self.audio = dataclasses.asdict(cfg.audio)
        self.encoder, self.mode, self.class_names = ctx.encoder, ctx.mode, ctx.class_names
        self.thresholds, self.variant, self.task = ctx.thresholds, ctx.variant, str(cfg.dataset.task)

    def load(self, wav: str | Path) -> tuple[Any, np.ndarray, int]:
        """``(wave at the model's rate, the file's samples, their rate)``."""
        from ls.data.audio import load_recording

        raw, sr = _read(wav)
        return load_recording(wav, self.ctx.checkpoint_cfg.audio), raw, sr

    def predict(self, wave: Any, cycles: Sequence[tuple[float, float]], meta: Mapping[str, np.ndarray],
                first: int, source: str) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, class ids)`` of a batch of cycles, through the single inference loop."""
        import torch

        from ls.data.audio import extract_cycles
        from ls.data.features import cycle_features
        from ls.engine.predict_rules import predict_classes, probabilities
        from ls.inference import run_inference

        cfg = self.ctx.checkpoint_cfg
        padded, _ = extract_cycles(wave, cycles, cfg.audio, source=source)
        spec = self.ctx.normalizer(cycle_features(padded, cfg.audio, cfg.dataset.w))
        items = [{"spec": spec[i], "meta": {k: torch.as_tensor(v[i]) for k, v in meta.items()}, "label": 0,
                  "filename": source, "cycle_index": first + i, "pid": ""} for i in range(len(cycles))]
        loader = torch.utils.data.DataLoader(items, batch_size=len(items), shuffle=False)
        out = run_inference(self.ctx.model, loader, self.ctx.device)
        probs = probabilities(out.logits, self.mode)
        return probs, predict_classes(probs, self.mode, self.thresholds)

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": str(self.ctx.path), "variant": self.variant}


class OnnxPredictor:
    """An exported model (``ls.deploy.runtime.OnnxModel``) behind the same interface as :class:`TorchModel`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.audio, self.encoder, self.mode = model.audio, model.encoder, model.mode
        self.class_names, self.thresholds = model.class_names, model.thresholds
        self.variant, self.task = model.variant, model.task

    def load(self, wav: str | Path) -> tuple[Any, np.ndarray, int]:
        from ls.deploy.audio import load_recording

        try:
            return load_recording(wav, self.audio)
        except ValueError as exc:
            raise PredictionError(str(exc)) from None

    def predict(self, wave: Any, cycles: Sequence[tuple[float, float]], meta: Mapping[str, np.ndarray],
                first: int, source: str) -> tuple[np.ndarray, np.ndarray]:
        from ls.deploy.audio import extract_cycles

        if self.model.input_kind != "waveform":
            raise PredictionError(f"{self.model.path} takes fbank features (exported with --features); ls.predict "
                                  "needs a model exported from audio: export it again without --features")
        probs, decisions = self.model.run(extract_cycles(wave, cycles, self.audio), meta)
        return probs.astype(np.float64), decisions.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return self.model.describe()


def as_predictor(model: Any) -> Any:
    """A :class:`TorchModel` or :class:`OnnxPredictor` for an ``InferenceContext``, an ``OnnxModel`` or either
    of the two itself."""
    if isinstance(model, (TorchModel, OnnxPredictor)):
        return model
    if type(model).__name__ == "OnnxModel":
        return OnnxPredictor(model)
    return TorchModel(model)


# -- metadata ------------------------------------------------------------------------------------------------
def parse_metadata(pairs: Sequence[str]) -> dict[str, str | None]:
    """``["device=Meditron", "age=63", "bmi=unknown"]`` -> ``{"device": "Meditron", "age": "63", "bmi": None}``
    (the text as given; ``unknown`` is None; :func:`check_metadata` turns numbers into floats)."""
    out: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PredictionError(f"--meta {pair!r}: expected NAME=VALUE, e.g. --meta device=Meditron")
        value = value.strip()
        out[key.strip()] = None if value.lower() in UNKNOWN_VALUES else value
    return out


def check_metadata(encoder: Any, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata as the encoder takes it: factors as text, continuous features as finite floats, None for
    an explicitly unknown value. A name the model does not know, or a continuous value that is not a finite
    number (``inf``, ``nan``, ``abc``), is a :class:`PredictionError` naming it."""
    out: dict[str, Any] = {}
    if encoder is None:
        return {k: v for k, v in metadata.items()}
    known = encoder.metadata_names()
    factors = set(encoder.schema.factors)
    unknown = sorted(set(metadata) - set(known))
    if unknown:
        raise PredictionError(f"unknown metadata {', '.join(unknown)}: this model takes {', '.join(sorted(known))}")
    for name, value in metadata.items():
        if isinstance(value, str) and value.strip().lower() in UNKNOWN_VALUES:
            value = None
        if value is None:
            out[name] = None
        elif name in factors:
            out[name] = str(value)
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise PredictionError(f"{name}={value!r}: expected a finite number, or 'unknown' when it is not "
                                      f"known (e.g. --meta {name}=unknown)")
            out[name] = number
    return out


def input_warnings(model: Any, wav: str | Path, wave: np.ndarray, sr: int, cycles: Sequence[tuple[float, float]],
                   metadata: Mapping[str, Any]) -> list[str]:
    """Why predictions on this input may be guesses (empty when it looks like training data). ``model``: a
    checkpoint's ``InferenceContext``, an ``OnnxModel`` or a predictor (:func:`as_predictor`)."""
    model = as_predictor(model)
    audio = model.audio
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
    high = float(audio["high_freq"])
    upper = high if high > 0 else audio["sample_rate"] / 2 + high
    if sr / 2 < upper / 2:
        notes.append(f"{wav}: sampled at {sr} Hz, it holds nothing above {sr / 2:.0f} Hz, but the model's "
                     f"features span {float(audio['low_freq']):.0f}-{upper:.0f} Hz: most mel bins are empty")
    length = float(audio["desired_length"])
    long = [i for i, (s, e) in enumerate(cycles) if e - s > length + 1e-6]
    if long:
        notes.append(f"{len(long)} cycle(s) are longer than the model's input of {length:g} s (e.g. cycle "
                     f"{long[0]}, {cycles[long[0]][1] - cycles[long[0]][0]:.1f} s): only their first {length:g} s "
                     "are used")
    ranges = getattr(model.encoder, "ranges", None) or {}
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


def _batches(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


@dataclasses.dataclass
class RecordingPrediction:
    """One recording's per-cycle table with the samples it was computed from (for the figure)."""

    wav: str
    table: pd.DataFrame
    wave: np.ndarray  # the file's samples (mono)
    sr: int
    annotation: list[tuple[float, float, tuple[int, int] | None]] | None = None


def predict_recording(
    ctx: Any,
    wav: str | Path,
    metadata: Mapping[str, Any] | None = None,
    cycles: Sequence[tuple[float, float]] | None = None,
    window: float | None = None,
    hop: float | None = None,
    batch_size: int = BATCH_SIZE,
    max_windows: int = MAX_WINDOWS,
    keep_audio: bool = False,
) -> pd.DataFrame | RecordingPrediction:
    """Per-cycle predictions of one recording.

    Args:
        ctx: ``ls.inference.load_for_inference(checkpoint)``, or ``ls.deploy.runtime.OnnxModel.load(path)``.
        metadata: the recording's metadata by name: each categorical factor of the checkpoint's data (ICBHI:
            ``device``, ``site``) and continuous feature (``age``, ``bmi``; ICBHI also ``child_weight``,
            ``child_height``). Missing values (absent, None or ``"unknown"``) are imputed as in training (factors:
            the unknown id, warned when not said explicitly). A continuous value that is not a finite number is
            an error.
        cycles: ``(start_s, end_s)`` per cycle; or None with ``window`` (sliding windows); or neither: the whole
            recording as one cycle, or windows of ``audio.desired_length`` when it is longer than
            ``AUTO_WINDOW_FACTOR`` times that (with a :class:`PredictionWarning`).
        batch_size: cycles per model call (memory holds one batch).
        max_windows: more cycles than this is refused before anything is computed.
        keep_audio: return a :class:`RecordingPrediction` (table + samples) instead of the table alone.

    Returns:
        One row per cycle: ``cycle, start, end, duration``, ``p_<class>`` per class (and the raw sigmoid
        outputs for sigmoid models), ``pred_class``.
    """
    from ls.engine.predict_rules import probability_columns
    from ls.types import UNKNOWN_ID

    model = as_predictor(ctx)
    audio = model.audio
    metadata = check_metadata(model.encoder, dict(metadata or {}))
    if batch_size < 1 or max_windows < 1:
        raise PredictionError(f"--batch-size and --max-windows must be >= 1, got {batch_size}, {max_windows}")
    wave, raw, sr = model.load(wav)
    duration = len(raw) / sr
    min_duration = float(audio["frame_length"]) / 1000.0  # at least one analysis frame
    if duration < min_duration:
        raise PredictionError(f"{wav}: recording is {duration * 1000:.1f} ms long; at least "
                              f"{float(audio['frame_length']):.0f} ms (one analysis frame) is needed")
    length = float(audio["desired_length"])
    if cycles is None and window is None and duration > AUTO_WINDOW_FACTOR * length:
        # One cycle would be cut to its first desired_length seconds: most of the recording never seen.
        window = length
        warnings.warn(f"{wav}: {duration:.1f} s long, but the model takes {window:g} s; predicting "
                      f"{window:g} s sliding windows (choose with --window/--hop or --cycles)",
                      PredictionWarning, stacklevel=2)
    if cycles is None:
        cycles = sliding_windows(duration, window, hop, max_windows) if window is not None else [(0.0, duration)]
    elif len(cycles) > max_windows:
        raise PredictionError(f"{wav}: {len(cycles):,} cycles, more than the limit of {max_windows:,} (--max-windows)")
    cycles = list(cycles)
    late = [i for i, (s, _) in enumerate(cycles) if s >= duration]
    if late:
        raise PredictionError(f"{wav}: cycle(s) {late[:5]} start after the end of the recording ({duration:.3f} s)")
    for note in input_warnings(model, wav, raw, sr, cycles, metadata):
        warnings.warn(note, PredictionWarning, stacklevel=2)

    encoder = model.encoder
    meta: dict[str, np.ndarray] = {}
    if encoder is not None:
        for factor in encoder.factor_names:
            vocab = encoder.vocabulary(factor)
            if factor in metadata and metadata[factor] is None:
                continue  # said to be unknown
            value = metadata.get(factor)
            if value is None or str(value) not in vocab[UNKNOWN_ID + 1:]:
                shown = "not given" if value is None else f"{value!r} was never seen in training"
                warnings.warn(f"{factor}: {shown} (known: {', '.join(vocab[1:])}); it is encoded as the "
                              f"'unknown' {factor} (say --meta {factor}=unknown when it is not known)",
                              PredictionWarning, stacklevel=2)
        with warnings.catch_warnings():  # unknown values were reported above
            warnings.simplefilter("ignore")
            logging.getLogger("ls.data.metadata").disabled = True
            try:  # every cycle at once: [N] ids per factor, [N, C] continuous features
                meta = encoder.encode_values(duration=[e - s for s, e in cycles], **metadata)
            finally:
                logging.getLogger("ls.data.metadata").disabled = False
    probs_parts, pred_parts = [], []
    for batch in _batches(len(cycles), batch_size):
        probs, pred = model.predict(wave, cycles[batch], {k: v[batch] for k, v in meta.items()}, batch.start,
                                    str(wav))
        probs_parts.append(probs)
        pred_parts.append(pred)
    probs, pred = np.concatenate(probs_parts), np.concatenate(pred_parts)
    table = pd.DataFrame({
        "cycle": np.arange(len(cycles)),
        "start": [s for s, _ in cycles],
        "end": [e for _, e in cycles],
        "duration": [e - s for s, e in cycles],
    })
    for name, values in probability_columns(probs, model.mode, model.class_names).items():
        table[name] = values
    table["pred_class"] = [model.class_names[c] for c in pred]
    if keep_audio:
        return RecordingPrediction(str(wav), table, raw, sr)
    return table


# -- output ----------------------------------------------------------------------------------------------------
def _model_header(model: Any) -> dict[str, Any]:
    return {**model.describe(), "class_names": list(model.class_names), "thresholds": model.thresholds,
            "decision_rule": model.mode.decision_rule}


def to_json(table: pd.DataFrame, ctx: Any, wav: str | Path, metadata: Mapping[str, Any],
            notes: Sequence[str] = (), recording: Mapping[str, Any] | None = None,
            aggregation_rule: str | None = None) -> str:
    """One recording's JSON: the model, its rules, the warnings, the cycles and the recording-level result."""
    return json.dumps(_recording_payload(as_predictor(ctx), table, wav, metadata, notes, recording,
                                         aggregation_rule), indent=2) + "\n"


def _recording_payload(model: Any, table: pd.DataFrame, wav: str | Path, metadata: Mapping[str, Any],
                       notes: Sequence[str], recording: Mapping[str, Any] | None,
                       aggregation_rule: str | None, header: bool = True) -> dict[str, Any]:
    payload: dict[str, Any] = {"wav": str(wav)}
    if header:
        payload.update(_model_header(model))
    payload.update({"metadata": dict(metadata), "warnings": list(notes)})
    if recording is not None:
        if header:
            payload["aggregation_rule"] = aggregation_rule
        payload["recording"] = dict(recording)
    payload["cycles"] = table.to_dict(orient="records")
    return payload


def _thresholds_text(model: Any) -> str:
    if model.thresholds in (None, (), []):
        return "none (argmax)"
    return ", ".join(f"{name}={value:g}" for name, value in zip(model.mode.threshold_names, model.thresholds))


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def to_csv(table: pd.DataFrame, ctx: Any, notes: Sequence[str] = (),
           summaries: Sequence[str] = ()) -> str:
    """The table as CSV under ``#`` header lines: the decision rule, the thresholds, the model, any warnings
    and recording/patient summaries (``pandas.read_csv(path, comment="#")`` skips them)."""
    model = as_predictor(ctx)
    source = model.describe()
    head = [f"# decision_rule: {model.mode.decision_rule}", f"# thresholds: {_thresholds_text(model)}"]
    head += [f"# {key}: {value}" for key, value in source.items() if key in ("checkpoint", "onnx")]
    head += [f"# warning: {_one_line(n)}" for n in notes]
    head += [f"# {_one_line(s)}" for s in summaries]
    return "\n".join(head) + "\n" + table.to_csv(index=False, float_format="%.6f")


def _summary_line(wav: str, res: Mapping[str, Any]) -> str:
    parts = [f"recording {wav}: {res['label']}"]
    for sound, entry in (res.get("sounds") or {}).items():
        parts.append(f"{sound} in {entry['windows']}/{res['windows']} windows")
    if "classes" in res:
        parts.append("record5 " + res["classes"]["record5"])
    return "; ".join(parts)


# -- command line ------------------------------------------------------------------------------------------
def recordings_of(paths: Sequence[str]) -> list[Path]:
    """The ``--wav`` arguments as files: a folder stands for the ``.wav`` files in it (sorted)."""
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
            if not found:
                raise PredictionError(f"--wav {path}: the folder holds no .wav files")
            out += found
        else:
            out.append(path)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.predict", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="an ls checkpoint (best.pt)")
    source.add_argument("--onnx", help="a model exported by python -m ls.export (runs without torch)")
    p.add_argument("--wav", required=True, action="append",
                   help="a recording (any rate, mono or multi-channel), repeatable, or a folder of .wav files: "
                        "several recordings of one patient get a patient-level summary")
    p.add_argument("--meta", action="append", default=[], metavar="NAME=VALUE",
                   help="the recording's metadata, repeatable: each factor and continuous feature of the "
                        "model's data, e.g. --meta device=Meditron --meta site=Tc --meta age=63; "
                        "NAME=unknown when not known")
    p.add_argument("--device", help="ICBHI shorthand for --meta device=...: the stethoscope (e.g. Meditron, "
                                    "AKGC417L, LittC2SE, Litt3200); the compute device is --compute-device")
    p.add_argument("--site", help="ICBHI shorthand for --meta site=... (Tc, Al, Ar, Pl, Pr, Ll, Lr)")
    p.add_argument("--age", default=None, help="shorthand for --meta age=... (years, or 'unknown')")
    p.add_argument("--bmi", default=None, help="shorthand for --meta bmi=... (kg/m^2, or 'unknown')")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cycles", action="append", default=None,
                     help="ICBHI-style annotation: 'start end [crackles wheezes]' per line (one per --wav)")
    src.add_argument("--window", type=float, help="sliding window length in seconds (default: the whole "
                     "recording as one cycle, or windows of the model's input length for a longer recording)")
    p.add_argument("--hop", type=float, default=None, help="sliding window hop in seconds (default: --window)")
    p.add_argument("--max-windows", type=int, default=MAX_WINDOWS,
                   help=f"refuse more windows than this per recording (default {MAX_WINDOWS:,})")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"cycles per model call ({BATCH_SIZE})")
    p.add_argument("--min-windows", type=int, default=None,
                   help="a sound is present in a recording when at least this many windows hold it (default 1)")
    p.add_argument("--format", default="json", choices=("json", "csv"))
    p.add_argument("--out", default=None, help="output file (default: stdout)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw a timeline figure (png or pdf); with several recordings one per recording, "
                        "named FILE_<recording>.png")
    p.add_argument("--compute-device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run a checkpoint (not the stethoscope: that is --device / --meta device=)")
    add_common_options(p)
    return p


def _plot_paths(plot: str, wavs: Sequence[Path]) -> list[Path]:
    base = Path(plot)
    if base.suffix.lower() not in (".png", ".pdf"):
        raise PredictionError(f"--plot {plot}: expected a .png or .pdf file name")
    if len(wavs) == 1:
        return [base]
    paths: list[Path] = []
    for w in wavs:  # recordings of the same name in different folders get _2, _3, ...: no figure overwrites another
        path, n = base.with_name(f"{base.stem}_{w.stem}{base.suffix}"), 1
        while path in paths:
            n += 1
            path = base.with_name(f"{base.stem}_{w.stem}_{n}{base.suffix}")
        paths.append(path)
    return paths


def load_model(args: argparse.Namespace) -> Any:
    if args.onnx:
        from ls.deploy.runtime import OnnxModel

        return OnnxPredictor(OnnxModel.load(args.onnx))
    from ls.inference import load_for_inference

    return TorchModel(load_for_inference(args.checkpoint, None, args.compute_device))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where), warnings
    ``warning:`` lines (and part of the output)."""
    from ls.aggregate import MIN_WINDOWS, aggregate_patient, aggregate_recording, rule_text

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        metadata: dict[str, Any] = parse_metadata(args.meta)
        for name in ("device", "site", "age", "bmi"):
            value = getattr(args, name)
            if value is not None:
                metadata[name] = None if value.strip().lower() in UNKNOWN_VALUES else value
        min_windows = MIN_WINDOWS if args.min_windows is None else args.min_windows
        if min_windows < 1:
            raise PredictionError(f"--min-windows must be >= 1, got {min_windows}")
        wavs = recordings_of(args.wav)
        if args.cycles and len(args.cycles) != len(wavs):
            raise PredictionError(f"--cycles given {len(args.cycles)} time(s) for {len(wavs)} recording(s): give "
                                  "one annotation per --wav, in the same order")
        annotations = [read_annotation(c) for c in args.cycles] if args.cycles else [None] * len(wavs)
        plots = _plot_paths(args.plot, wavs) if args.plot else []
        if args.window is not None and not (math.isfinite(args.window) and args.window > 0):
            raise PredictionError(f"--window must be a positive number of seconds, got {args.window}")
        model = load_model(args)
        metadata = check_metadata(model.encoder, metadata)
        rule = rule_text(min_windows)
        done: list[tuple[RecordingPrediction, list[str], dict[str, Any]]] = []
        for i, wav in enumerate(wavs):
            cycles = [(s, e) for s, e, _ in annotations[i]] if annotations[i] else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pred = predict_recording(model, wav, metadata, cycles, args.window, args.hop, args.batch_size,
                                         args.max_windows, keep_audio=bool(plots))
            if not plots:  # the samples are only for the figure: not kept for every recording
                pred = RecordingPrediction(str(wav), pred, np.empty(0, dtype=np.float32), 0)
            pred.annotation = annotations[i]
            notes = [str(w.message) for w in caught if issubclass(w.category, PredictionWarning)]
            for w in caught:  # the notes go into the output too; other libraries' warnings only to stderr
                print(f"warning: {w.message}", file=sys.stderr)
            result = aggregate_recording(pred.table, model.mode, model.class_names, model.task, min_windows)
            done.append((pred, notes, result))
        patient = aggregate_patient({p.wav: r for p, _, r in done}) if len(done) > 1 else None
        if args.format == "json":
            if len(done) == 1:
                pred, notes, result = done[0]
                text = json.dumps(_recording_payload(model, pred.table, pred.wav, metadata, notes, result, rule),
                                  indent=2) + "\n"
            else:
                payload = {**_model_header(model), "aggregation_rule": rule, "metadata": dict(metadata),
                           "patient": patient,
                           "recordings": [_recording_payload(model, p.table, p.wav, metadata, n, r, rule, header=False)
                                          for p, n, r in done]}
                text = json.dumps(payload, indent=2) + "\n"
        else:
            tables = [p.table.assign(wav=p.wav)[["wav", *p.table.columns]] if len(done) > 1 else p.table
                      for p, _, _ in done]
            summaries = [f"aggregation_rule: {rule}"] + [_summary_line(p.wav, r) for p, _, r in done]
            if patient is not None:
                summaries.append(f"patient: {'abnormal' if patient['abnormal'] else 'normal'}, "
                                 f"{patient['abnormal_recordings']}/{patient['recordings']} recordings abnormal")
            text = to_csv(pd.concat(tables, ignore_index=True), model, [n for _, ns, _ in done for n in ns],
                          summaries)
        if args.out:
            atomic_write_text(args.out, text)
        else:
            sys.stdout.write(text)
        for path, (pred, _, result) in zip(plots, done):
            from ls.viz.timeline import plot_timeline

            plot_timeline(pred, model.mode, model.class_names, model.thresholds, result, path)
            print(f"wrote {path}", file=sys.stderr)
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    raise SystemExit(main())
