"""How well the recording-level rule of ``ls.predict`` (``ls.aggregate``) finds SPRSound's record classes.

For every recording of a split of an SPRSound run (a model trained on events: ``icbhi4`` or ``event7``), the
whole recording is cut into sliding windows, each window is predicted as ``ls.predict`` does, and the windows
are aggregated to a record class (``record5``: Normal / CAS / DAS / CAS & DAS; ``record3``: Normal /
Adventitious). The result is compared with the recording's ``record_annotation``. Poor Quality recordings have
no events, so an event model's split holds none; they are not scored. Usage::

    python benchmarks/aggregation.py --checkpoint runs/<sprsound icbhi4 run>/best.pt [--window 2 --hop 1]
        [--split test] [--min-windows 1 2 3] [--onnx model.onnx]

Prints, per ``--min-windows``: record5 and record3 accuracy, record3 sensitivity/specificity/score, and the
record5 confusion matrix. Not a test: it predicts every window of every recording of the split.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECORD5 = ("Normal", "CAS", "DAS", "CAS & DAS")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", default=None, help="predict with this export of the checkpoint instead")
    p.add_argument("--split", default="test")
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--hop", type=float, default=1.0)
    p.add_argument("--min-windows", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from ls.aggregate import aggregate_recording
    from ls.data import build_datasets
    from ls.inference import load_for_inference
    from ls.predict import as_predictor, predict_recording

    ctx = load_for_inference(args.checkpoint, device="cpu")
    datasets = build_datasets(ctx.cfg, encoder=ctx.encoder)
    table = getattr(datasets, args.split).table
    if "Record" not in table:
        raise SystemExit("error: the checkpoint's data has no SPRSound record labels (Record column)")
    model = as_predictor(ctx)
    if args.onnx:
        from ls.deploy.runtime import OnnxModel

        model = as_predictor(OnnxModel.load(args.onnx))
    schema = ctx.encoder.schema
    rows = []
    first = table.drop_duplicates("Filename")
    for _, rec in first.iterrows():
        meta = {name: rec[col] for name, col in schema.factors.items()}
        meta |= {name: float(rec[col]) for name, col in schema.continuous.items() if col and pd.notna(rec[col])}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            windows = predict_recording(model, rec["AudioPath"], meta, window=args.window, hop=args.hop)
        row = {"recording": rec["Filename"], "true": rec["Record"], "windows": len(windows)}
        for k in args.min_windows:
            res = aggregate_recording(windows, model.mode, model.class_names, model.task, k)
            row[f"pred_{k}"] = res["classes"]["record5"]
        rows.append(row)
    results = pd.DataFrame(rows)
    scored = results[results["true"].isin(RECORD5)]
    report = {"recordings": len(results), "scored": len(scored), "window": args.window, "hop": args.hop,
              "true_counts": scored["true"].value_counts().to_dict(), "by_min_windows": {}}
    print(f"{args.split} split: {len(scored)} recordings scored (of {len(results)}), windows {args.window:g} s "
          f"every {args.hop:g} s; true record classes: {report['true_counts']}")
    for k in args.min_windows:
        pred = scored[f"pred_{k}"]
        acc5 = float((pred == scored["true"]).mean())
        t3, p3 = scored["true"] != "Normal", pred != "Normal"
        acc3 = float((t3 == p3).mean())
        se = float(p3[t3].mean()) if t3.any() else float("nan")
        sp = float((~p3[~t3]).mean()) if (~t3).any() else float("nan")
        cm = pd.crosstab(scored["true"], pred).reindex(index=list(RECORD5), columns=list(RECORD5), fill_value=0)
        report["by_min_windows"][k] = {"record5_accuracy": acc5, "record3_accuracy": acc3, "record3_se": se,
                                       "record3_sp": sp, "confusion": cm.to_dict()}
        print(f"\nmin_windows={k}: record5 accuracy {100 * acc5:.1f} %, record3 accuracy {100 * acc3:.1f} % "
              f"(Se {100 * se:.1f}, Sp {100 * sp:.1f}, score {50 * (se + sp):.1f})")
        print(cm.to_string())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

