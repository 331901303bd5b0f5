"""Export a checkpoint as one self-describing ONNX file that goes from audio to decisions.

    python -m ls.export --checkpoint best.pt --out model.onnx [--features] [--quantize int8] [--config data.yaml]

The graph takes the cycles of a recording cut/padded to the model's input length (``[N, samples]`` float32 at
the model's sample rate; with ``--features`` their raw Kaldi fbank ``[N, frames, mel_bins]`` instead), one int64
``[N]`` input per metadata factor and ``cont [N, C]`` (the encoded continuous features), and returns
``probabilities`` (sigmoid or softmax, as the output mode) and ``decisions`` (class ids under the checkpoint's
thresholds). The feature extraction runs inside the graph (:class:`ls.data.frontend.FeatureFrontEnd`: framing,
pre-emphasis, window, DFT, mel matmul, log, frame fit, normalisation). Everything a runtime needs besides
travels in the file's ``metadata_props`` (:mod:`ls.deploy.runtime` lists the keys); ``python -m ls.predict --onnx
model.onnx`` runs it without torch.

``--quantize int8`` also writes ``<out>.int8.onnx`` (onnxruntime dynamic quantisation of the model's weight
matmuls; the feature front end stays float32), and reports its size, the change in Sp/Se/Score on the run's
test split and how often it decides as the float32 file does. A drop of the ICBHI score beyond ``--max-drop``
points is a ``warning:`` line.

Needs the ``deploy`` extra (``pip install 'ls[deploy]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ls
from ls.deploy import DEPLOY_MODULES, require
from ls.deploy.runtime import EXPORT_FORMAT, OnnxModel
from ls.inference import InferenceContext, load_for_inference
from ls.utils.cli import add_common_options, run_command
from ls.utils.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

#: ONNX opset of the export: 18 has DFT (17+) and the reductions the exporter emits.
OPSET = 18
#: The graph's outputs, in order.
OUTPUTS = ("probabilities", "decisions")
#: Default bound on the ICBHI-score drop (percentage points) of int8 against float32 before a warning.
MAX_INT8_DROP = 1.0


class ExportGraph(torch.nn.Module):
    """Front end + model + output mode: ``(x, {factor: ids, "cont": cont}) -> (probabilities, decisions)``."""

    def __init__(self, ctx: InferenceContext, from_features: bool = False) -> None:
        from ls.data.frontend import FeatureFrontEnd

        super().__init__()
        cfg = ctx.checkpoint_cfg
        self.frontend = FeatureFrontEnd(cfg.audio, cfg.dataset.h or cfg.audio.n_mels, cfg.dataset.w,
                                        ctx.normalizer, from_features=from_features)
        self.model = ctx.model
        self.kind = ctx.mode.kind
        thresholds = tuple(ctx.thresholds or ()) if ctx.mode.uses_thresholds else ()
        self.register_buffer("thresholds", torch.tensor(thresholds or (0.5,), dtype=torch.float32),
                             persistent=False)
        uses_meta = ctx.metadata_spec is not None and getattr(ctx.model.conditioning, "requires_metadata", True)
        self.meta_names = [*ctx.metadata_spec.factor_names, "cont"] if uses_meta else []

    def forward(self, x: torch.Tensor, meta: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.frontend(x)
        logits = self.model(spec, meta if self.meta_names else None)
        if self.kind == "multiclass":
            probs = torch.softmax(logits, dim=-1)
            return probs, probs.argmax(dim=-1)
        probs = torch.sigmoid(logits)
        on = (probs >= self.thresholds).to(torch.int64)
        if self.kind == "binary":
            return probs[:, 0], on[:, 0]
        return probs, on[:, 0] + 2 * on[:, 1]  # the multilabel composite class: crackle + 2 wheeze


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_shape(ctx: InferenceContext) -> dict[str, int]:
    from ls.data.frontend import frame_count, input_samples

    cfg = ctx.checkpoint_cfg
    return {"samples": input_samples(cfg.audio), "frames": frame_count(cfg.audio), "mel_bins": cfg.audio.n_mels,
            "model_frames": cfg.dataset.w}


def model_metadata(ctx: InferenceContext, input_kind: str) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (:mod:`ls.deploy.runtime` documents the keys)."""
    from ls.types import UNKNOWN_ID

    cfg = ctx.checkpoint_cfg
    enc = ctx.encoder
    thresholds = dict(zip(ctx.mode.threshold_names, ctx.thresholds)) if ctx.thresholds else {}
    continuous = {}
    if enc is not None:
        continuous = {"names": list(enc.cont_names), "medians": dict(enc.impute), "mean": dict(enc.mean),
                      "std": dict(enc.std), "ranges": {k: list(v) for k, v in enc.ranges.items()}}
    props = {
        "format": str(EXPORT_FORMAT),
        "version": ls.__version__,
        "variant": ctx.variant,
        "task": str(cfg.dataset.task),
        "checkpoint_sha256": file_sha256(ctx.path),
        "input": input_kind,
        "input_shape": json.dumps(input_shape(ctx)),
        "output_mode": json.dumps(ctx.mode.to_dict()),
        "class_names": json.dumps(list(ctx.class_names)),
        "decision_rule": ctx.mode.decision_rule,
        "thresholds": json.dumps(thresholds),
        "factors": json.dumps(ctx.vocabularies()),
        "unknown_id": str(UNKNOWN_ID),
        "continuous": json.dumps(continuous),
        "metadata_encoder": json.dumps(enc.state_dict() if enc is not None else {}),
        "audio": json.dumps(dataclasses.asdict(cfg.audio)),
        "normalizer": json.dumps(ctx.normalizer.state_dict()),
    }
    return {f"ls.{k}": v for k, v in props.items()}


def example_inputs(graph: ExportGraph, ctx: InferenceContext, n: int = 2, seed: int = 0
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Random inputs of the graph's signature (noise cycles, valid ids, standard-normal ``cont``)."""
    g = torch.Generator().manual_seed(seed)
    shape = input_shape(ctx)
    x = (0.1 * torch.randn(n, shape["samples"], generator=g) if graph.frontend.fbank is not None
         else torch.randn(n, shape["frames"], shape["mel_bins"], generator=g) - 4.0)
    meta: dict[str, torch.Tensor] = {}
    if graph.meta_names:
        for factor in ctx.metadata_spec.factors:
            meta[factor.name] = torch.randint(0, factor.size, (n,), generator=g)
        meta["cont"] = torch.randn(n, ctx.metadata_spec.cont_dim, generator=g)
    return x, meta


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """The exporter's progress lines and its notes about torchvision operators it does not need, kept out of
    the command's output (returned for an error message)."""
    noisy = logging.getLogger("torch.onnx._internal.exporter._schemas")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        noisy.setLevel(level)


def export_model(ctx: InferenceContext, out: str | Path, *, features: bool = False, opset: int = OPSET) -> Path:
    """Write the ONNX file of ``ctx`` to ``out`` (atomically) and return its path."""
    require(*DEPLOY_MODULES, what="ls.export")
    import onnx

    if ctx.checkpoint_cfg.audio.dither:
        warnings.warn(f"the checkpoint's audio.dither is {ctx.checkpoint_cfg.audio.dither}: the exported features "
                      "are computed without dither (deterministic, as at prediction)", stacklevel=2)
    graph = ExportGraph(ctx, from_features=features).eval().to("cpu")
    x, meta = example_inputs(graph, ctx)
    names = ["features" if features else "waveform", *meta]
    cycles = torch.export.Dim("cycles", min=1, max=1 << 20)
    with _quiet_exporter() as chatter:  # not under no_grad: it adds a batch-size guard (N != 1)
        try:
            program = torch.onnx.export(graph, (x,), None, kwargs={"meta": meta}, dynamo=True, opset_version=opset,
                                        input_names=names, output_names=list(OUTPUTS), verbose=False,
                                        dynamic_shapes={"x": {0: cycles}, "meta": {k: {0: cycles} for k in meta}})
        except Exception as exc:
            raise RuntimeError(f"torch.onnx.export failed for variant {ctx.variant}: {exc}\n{chatter.getvalue()}") \
                from exc
    model = program.model_proto
    onnx.helper.set_model_props(model, model_metadata(ctx, names[0]))
    model.doc_string = f"ls {ls.__version__} {ctx.variant}: audio -> probabilities, decisions (see metadata_props)"
    out = Path(out)
    atomic_write_bytes(out, model.SerializeToString())
    return out


def frontend_nodes(model: Any) -> list[str]:
    """Names of the nodes that compute the features (the exporter records each node's module path in its
    ``pkg.torch.onnx.name_scopes``): they stay float32 under quantisation, where rounding the DFT and mel
    matrices would shift every log-mel value."""
    names = []
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if "'frontend'" in scopes:
            names.append(node.name)
    return names


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantisation (onnxruntime) of ``src``'s weight matmuls into ``dst``; metadata kept."""
    require("onnx", "onnxruntime", what="--quantize int8")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    front = frontend_nodes(model)
    if not front:
        raise RuntimeError(f"{src}: no feature front-end nodes found to keep in float32")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's advice to pre-process first, printed through the root logger
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         nodes_to_exclude=front)
        quantized = onnx.load(str(tmp))
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    props = {p.key: p.value for p in model.metadata_props}
    props["ls.quantization"] = "int8 dynamic (onnxruntime): weight matmuls; feature front end float32"
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, props)
    atomic_write_bytes(dst, quantized.SerializeToString())
    return dst


# -- the run's test split through an exported model ---------------------------------------------------------------
@dataclass
class SplitCycles:
    """The cycles of a split, grouped by recording: what both the checkpoint and an exported model predict."""

    recordings: list[tuple[str, list[tuple[float, float]], dict[str, np.ndarray], np.ndarray]]
    #: (audio path, cycles, encoded metadata per cycle, row positions in ``labels``)
    labels: np.ndarray  # class ids [N]

    def __len__(self) -> int:
        return len(self.labels)


def split_cycles(ctx: InferenceContext, split: str = "test") -> SplitCycles:
    """The cycles of ``split`` of the checkpoint's data (``ctx.cfg.dataset``), with the checkpoint's encoder."""
    from ls.data import build_datasets
    from ls.engine.predict_rules import target_classes

    cfg = copy.deepcopy(ctx.cfg)
    cfg.audio.raw_augment = False  # only the table, metadata and labels are read: no augmentation cache
    datasets = build_datasets(cfg, encoder=ctx.encoder)
    dataset = getattr(datasets, split)
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"split {split!r} is empty for the data in {ctx.cfg.dataset.data_folder}")
    table = dataset.table.reset_index(drop=True)
    meta = {k: np.asarray(v) for k, v in dataset.meta.items()}  # encoded by the checkpoint's encoder
    labels = target_classes(np.asarray(dataset.labels), ctx.mode)
    data_folder = Path(ctx.cfg.dataset.data_folder)
    recordings = []
    for name, rows in table.groupby("Filename", sort=False).indices.items():
        path = table["AudioPath"].iloc[rows[0]] if "AudioPath" in table else data_folder / f"{name}.wav"
        cycles = list(zip(table["CycleStart"].to_numpy()[rows].tolist(), table["CycleEnd"].to_numpy()[rows].tolist()))
        recordings.append((str(path), cycles, {k: v[rows] for k, v in meta.items()}, rows))
    return SplitCycles(recordings, labels)


def predict_split_onnx(model: OnnxModel, data: SplitCycles, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, decisions)`` of every cycle of ``data`` through ``model`` (rows as ``data.labels``)."""
    from ls.deploy.audio import extract_cycles, load_recording

    probs: np.ndarray | None = None
    decisions = np.zeros(len(data), dtype=np.int64)
    for path, cycles, meta, rows in data.recordings:
        wave, _, _ = load_recording(path, model.audio)
        for lo in range(0, len(cycles), batch_size):
            batch = slice(lo, lo + batch_size)
            p, d = model.run(extract_cycles(wave, cycles[batch], model.audio), {k: v[batch] for k, v in meta.items()})
            if probs is None:
                probs = np.zeros((len(data), *p.shape[1:]), dtype=np.float32)
            probs[rows[batch]], decisions[rows[batch]] = p, d
    assert probs is not None
    return probs, decisions


def predict_split_torch(ctx: InferenceContext, data: SplitCycles, batch_size: int = 64) -> np.ndarray:
    """Probabilities (float64, ``ls.engine.predict_rules.probabilities``) of every cycle of ``data`` through the
    checkpoint, with the features computed from the audio as ``ls.predict`` does (no feature cache)."""
    from ls.data.audio import extract_cycles, load_recording
    from ls.data.features import cycle_features
    from ls.engine.predict_rules import probabilities

    cfg = ctx.checkpoint_cfg
    out: np.ndarray | None = None
    with torch.no_grad():
        for path, cycles, meta, rows in data.recordings:
            wave = load_recording(path, cfg.audio)
            for lo in range(0, len(cycles), batch_size):
                batch = slice(lo, lo + batch_size)
                padded, _ = extract_cycles(wave, cycles[batch], cfg.audio, source=path)
                spec = ctx.normalizer(cycle_features(padded, cfg.audio, cfg.dataset.w)).to(ctx.device)
                m = {k: torch.from_numpy(np.ascontiguousarray(v[batch])).to(ctx.device) for k, v in meta.items()}
                p = probabilities(ctx.model(spec, m or None), ctx.mode)
                if out is None:
                    out = np.zeros((len(data), *p.shape[1:]), dtype=np.float64)
                out[rows[batch]] = p
    assert out is not None
    return out


def split_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    from ls.engine.metrics import icbhi_scores

    m = icbhi_scores(y_true, y_pred, n_classes)
    return {k: 100.0 * float(m[k]) for k in ("specificity", "sensitivity", "icbhi_score")}


def quantization_report(ctx: InferenceContext, fp32: Path, int8: Path, split: str = "test",
                        max_drop: float = MAX_INT8_DROP) -> dict[str, Any]:
    """Sizes, Sp/Se/Score of both files on ``split`` of the run's data, their decision agreement, and
    ``warning`` (None, or the sentence to print when the score dropped by more than ``max_drop`` points)."""
    report: dict[str, Any] = {"fp32_mb": fp32.stat().st_size / 1e6, "int8_mb": int8.stat().st_size / 1e6,
                              "split": split, "max_drop": max_drop, "warning": None}
    data = split_cycles(ctx, split)
    results = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        probs, decisions = predict_split_onnx(OnnxModel.load(path), data)
        results[name] = (probs, decisions)
        report[name] = split_scores(data.labels, decisions, ctx.mode.n_classes)
    report["n_cycles"] = len(data)
    report["agreement"] = 100.0 * float(np.mean(results["fp32"][1] == results["int8"][1]))
    report["max_abs_prob_diff"] = float(np.max(np.abs(results["fp32"][0] - results["int8"][0])))
    report["change"] = {k: report["int8"][k] - report["fp32"][k] for k in report["fp32"]}
    drop = -report["change"]["icbhi_score"]
    if drop > max_drop:
        report["warning"] = (f"int8 lowers the {split} ICBHI score by {drop:.2f} points (more than --max-drop "
                             f"{max_drop:g}): prefer the float32 file {fp32}")
    return report


def format_quantization(report: Mapping[str, Any]) -> str:
    f, q, c = report["fp32"], report["int8"], report["change"]
    return (f"int8: {report['int8_mb']:.1f} MB (fp32 {report['fp32_mb']:.1f} MB); {report['split']} split, "
            f"{report['n_cycles']} cycles: Sp {q['specificity']:.2f} ({c['specificity']:+.2f}), "
            f"Se {q['sensitivity']:.2f} ({c['sensitivity']:+.2f}), Score {q['icbhi_score']:.2f} "
            f"({c['icbhi_score']:+.2f}) vs fp32 {f['icbhi_score']:.2f}; same decision as fp32 on "
            f"{report['agreement']:.2f} % of cycles (max |dp| {report['max_abs_prob_diff']:.2g})")


def check_export(ctx: InferenceContext, path: Path, features: bool = False) -> float:
    """Max |probability difference| between the file (onnxruntime) and the checkpoint on random inputs."""
    graph = ExportGraph(ctx, from_features=features).eval()
    args = example_inputs(graph, ctx, n=3, seed=1)
    with torch.no_grad():
        want = graph(*args)[0].numpy()
    model = OnnxModel.load(path)
    got, _ = model.run(args[0].numpy(), {name: a.numpy() for name, a in args[1].items()})
    return float(np.max(np.abs(got - want)))


# -- command line ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="ls checkpoint (best.pt)")
    p.add_argument("--out", required=True, help="the ONNX file to write (e.g. model.onnx)")
    p.add_argument("--features", action="store_true",
                   help="the graph takes raw Kaldi fbank features [N, frames, mel bins] instead of waveforms")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="also write <out>.int8.onnx and report its size and test-split scores against fp32")
    p.add_argument("--max-drop", type=float, default=MAX_INT8_DROP,
                   help=f"warn when int8 lowers the test ICBHI score by more points than this ({MAX_INT8_DROP:g})")
    p.add_argument("--config", help="YAML whose dataset section locates the run's data (for --quantize)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split --quantize scores on")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (>= 17 for the DFT; default {OPSET})")
    add_common_options(p)
    return p


def int8_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.int8{out.suffix or '.onnx'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        require(*DEPLOY_MODULES, what="ls.export")
        if args.opset < 17:
            raise ValueError(f"--opset {args.opset}: the feature extraction needs the DFT operator, opset >= 17")
        if args.quantize and args.features:
            raise ValueError("--quantize scores the model on the run's audio: export without --features to use it")
        out = Path(args.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give the file to write, e.g. {out / 'model.onnx'}")
        ctx = load_for_inference(args.checkpoint, args.config, "cpu")
        if args.quantize:  # the int8 report reads the run's data: know it is there before exporting
            from ls.evaluate import require_data_folder

            require_data_folder(ctx, args.config)
        # Written beside --out and checked there: an unfaithful export never replaces a file at --out.
        trial = out.with_name(f".{out.name}.{os.getpid()}.checking.onnx")
        try:
            export_model(ctx, trial, features=args.features, opset=args.opset)
            diff = check_export(ctx, trial, args.features)
            if not diff <= 1e-3:  # also NaN
                raise ValueError(f"{out}: onnxruntime and PyTorch differ by {diff:.2g} on random inputs (expected "
                                 "< 1e-3): the export is not faithful, so it was not written; please report it "
                                 "with --traceback output")
            os.replace(trial, out)
        finally:
            trial.unlink(missing_ok=True)
        mb = out.stat().st_size / 1e6
        print(f"wrote {out} ({mb:.1f} MB, {ctx.variant}, input {'features' if args.features else 'waveform'}); "
              f"onnxruntime vs PyTorch on random cycles: max |dp| {diff:.2g}")
        if args.quantize:
            q = quantize_int8(out, int8_path(out))
            report = quantization_report(ctx, out, q, args.split, args.max_drop)
            atomic_write_text(q.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
            print(f"wrote {q}")
            print(format_quantization(report))
            if report["warning"]:
                print(f"warning: {report['warning']}", file=sys.stderr)
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    raise SystemExit(main())


