"""Latency and size of one model in three forms: the PyTorch checkpoint (fp32), the exported ONNX file (fp32)
and its int8 dynamic quantisation, per variant, at batch 1: one 8 s cycle from waveform to probabilities.

Two inputs:

- ``paper``: each variant's paper config (``configs/<variant>_config.yaml``: base384, 10 s cycles, 128 mel bins x
  1024 frames, stride 10); the 8 s cycle is padded to 10 s;
- ``quickstart``: ``configs/quickstart.yaml`` (tiny224, 4 s cycles, 16 mel bins x 128 frames, stride 16) for every
  variant; the 8 s cycle is cut to its first 4 s.

Weights are random (latency and size do not depend on them). Every form computes the same thing: the padded
waveform -> Kaldi fbank -> frame fit -> normalisation -> model -> probabilities (PyTorch through
``ls.data.features`` and the model; ONNX through the exported graph, onnxruntime on the CPU). The three forms are
timed in turns, the order rotating every round, so load that comes and goes hits all three alike. Sizes are
the files: the checkpoint (``best.pt``, weights + config + encoder), the ONNX file and the int8 file. Usage::

    python benchmarks/export.py                                   # both inputs, every variant
    python benchmarks/export.py --inputs quickstart --runs 50 --variants ast ast_film_soft --json out.json

Not a test: the paper input takes minutes per variant on a small CPU. Run it on a quiet machine; the
1-minute load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")
CYCLE_S = 8.0


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def config_for(variant: str, inputs: str):
    from ls.config import load_config

    if inputs == "paper":
        cfg = load_config(REPO / "configs" / f"{variant}_config.yaml", overrides=["dataset.data_folder=unused"])
    else:
        overrides = ["dataset.data_folder=unused"]
        if variant not in ("ast", "ast_film_soft"):  # the quickstart file sets these two; the others alike
            overrides += [f"models.{variant}.model_size=tiny224", f"models.{variant}.fstride=16",
                          f"models.{variant}.tstride=16"]
        cfg = load_config(REPO / "configs" / "quickstart.yaml", overrides=overrides)
    model_cfg = cfg.model(variant)
    model_cfg.weights.source, model_cfg.weights.path = "none", None
    return cfg


def fitted_encoder(cfg):
    """The ICBHI metadata encoder fitted on a small made-up table (its values do not change latency)."""
    from ls.data.metadata import MetadataEncoder

    rng = np.random.default_rng(0)
    n = 40
    table = pd.DataFrame({
        "Device": rng.choice(["AKGC417L", "Meditron", "LittC2SE", "Litt3200"], n),
        "AuscLoc": rng.choice(["Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"], n),
        "Age": rng.uniform(1, 90, n), "BMI": rng.uniform(15, 40, n), "CW": np.nan, "CH": np.nan,
        "CycleStart": 0.0, "CycleEnd": rng.uniform(0.5, 8.0, n),
    })
    enc = MetadataEncoder.from_config(cfg.dataset).fit(table)
    enc.feature_stats = {"mean": -6.0, "std": 3.0}
    return enc


def write_checkpoint(variant: str, inputs: str, folder: Path) -> Path:
    import ls
    from ls.config import to_dict
    from ls.engine.checkpoint import CHECKPOINT_FORMAT, cpu_state_dict, save_checkpoint
    from ls.models import build_model

    cfg = config_for(variant, inputs)
    enc = fitted_encoder(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model(variant), enc.spec)
    state = {
        "format": CHECKPOINT_FORMAT, "version": ls.__version__, "variant": variant, "config": to_dict(cfg),
        "model": cpu_state_dict(model), "metadata_encoder": enc.state_dict(), "metadata_spec": enc.spec.to_dict(),
        "class_names": ["normal", "crackle", "wheeze", "both"], "thresholds": [0.5, 0.5],
        "output_mode": cfg.output_mode.to_dict(), "epoch": 1, "trainer": {"history": []},
    }
    return save_checkpoint(state, folder / f"{variant}_{inputs}.pt")


def measure(variant: str, inputs: str, runs: int, threads: int, folder: Path) -> dict:
    import onnxruntime as ort

    from ls.data.audio import fit_length
    from ls.data.features import cycle_features
    from ls.engine.predict_rules import probabilities
    from ls.export import export_model, quantize_int8
    from ls.inference import load_for_inference

    ckpt = write_checkpoint(variant, inputs, folder)
    ctx = load_for_inference(ckpt, device="cpu")
    cfg = ctx.checkpoint_cfg
    fp32, int8 = folder / f"{variant}_{inputs}.onnx", folder / f"{variant}_{inputs}.int8.onnx"
    t0 = time.perf_counter()
    export_model(ctx, fp32)
    export_s = time.perf_counter() - t0
    quantize_int8(fp32, int8)

    rng = np.random.default_rng(0)
    cycle = torch.from_numpy(rng.normal(0, 0.1, int(CYCLE_S * cfg.audio.sample_rate)).astype(np.float32))
    wave = fit_length(cycle, cfg.audio)[None]  # [1, L]: the 8 s cycle cut/padded to the model's input
    meta_np = ctx.encoder.encode_values(duration=[CYCLE_S], device="Meditron", site="Tc", age=60.0, bmi=25.0)
    meta_t = {k: torch.from_numpy(v) for k, v in meta_np.items()}

    torch.set_num_threads(threads)

    def run_torch() -> None:
        with torch.no_grad():
            spec = ctx.normalizer(cycle_features(wave, cfg.audio, cfg.dataset.w))
            probabilities(ctx.model(spec, meta_t), ctx.mode)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in (("onnx_fp32", fp32), ("onnx_int8", int8))}

    def runner(session):
        names = {i.name for i in session.get_inputs()}
        feed = {"waveform": wave.numpy(), **{k: v for k, v in meta_np.items() if k in names}}
        return lambda: session.run(None, feed)

    forms = {"pytorch_fp32": run_torch, **{name: runner(s) for name, s in sessions.items()}}
    for fn in forms.values():  # warm-up: first-call allocations and kernel selection
        fn()
    times: dict[str, list[float]] = {name: [] for name in forms}
    order = list(forms)
    for r in range(runs):
        for name in order[r % 3:] + order[: r % 3]:  # rotate which form goes first
            t = time.perf_counter()
            forms[name]()
            times[name].append(1000.0 * (time.perf_counter() - t))
    sizes = {"pytorch_fp32": ckpt.stat().st_size / 1e6, "onnx_fp32": fp32.stat().st_size / 1e6,
             "onnx_int8": int8.stat().st_size / 1e6}
    out = {"variant": variant, "inputs": inputs, "export_s": round(export_s, 1),
           "input": f"{cfg.audio.n_mels}x{cfg.dataset.w}", "model_size": cfg.model(variant).model_size}
    for name, values in times.items():
        q = statistics.quantiles(values, n=20, method="inclusive")
        out[name] = {"p50_ms": statistics.median(values), "p95_ms": q[18], "mb": sizes[name]}
    for path in (ckpt, fp32, int8):
        path.unlink()
    return out


def markdown(rows: list[dict]) -> str:
    head = ("| input | variant | PyTorch fp32 p50 / p95 ms | ONNX fp32 p50 / p95 ms | ONNX int8 p50 / p95 ms | "
            "MB (checkpoint / ONNX / int8) |\n|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        cells = [f"{r[k]['p50_ms']:.0f} / {r[k]['p95_ms']:.0f}" if r[k]['p50_ms'] >= 10 else
                 f"{r[k]['p50_ms']:.1f} / {r[k]['p95_ms']:.1f}" for k in ("pytorch_fp32", "onnx_fp32", "onnx_int8")]
        mb = " / ".join(f"{r[k]['mb']:.1f}" for k in ("pytorch_fp32", "onnx_fp32", "onnx_int8"))
        lines.append(f"| {r['inputs']} ({r['model_size']}, {r['input']}) | {r['variant']} | {' | '.join(cells)} | {mb} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", nargs="+", default=["quickstart", "paper"], choices=("quickstart", "paper"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--runs", type=int, default=30, help="timed calls per form (after one warm-up call)")
    p.add_argument("--paper-runs", type=int, default=10, help="timed calls per form at the paper input")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of PyTorch and onnxruntime")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)

    import onnxruntime

    start_load = load_average()
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; {args.threads} thread(s); batch 1, one {CYCLE_S:g} s cycle; "
          f"1-min load average at start {start_load:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for inputs in args.inputs:
            for variant in args.variants:
                runs = args.paper_runs if inputs == "paper" else args.runs
                row = measure(variant, inputs, runs, args.threads, Path(tmp))
                row["load"] = round(load_average(), 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(markdown(rows))
    print(f"1-min load average: {start_load:.2f} at start, {load_average():.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": cpu_name(), "threads": args.threads, "rows": rows},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

