"""Measurement: how much seeded numbers move across CPU code paths and under ulp-sized changes of the init.

    python benchmarks/cpu_paths.py [--capabilities default avx2 avx512] [--perturb 4] [--json OUT.json]
        [--parts init fingerprint regression]

Each setting runs in its own process on one thread, with ``ATEN_CPU_CAPABILITY`` set to one of
``--capabilities`` (the vector code torch's own kernels dispatch to; matmuls go through MKL/oneDNN whatever it
says), and, with ``--perturb K``, once more on the native path with every seeded initial weight moved by up to
K float32 ulps (what another CPU or build of torch does to them). It measures:

- ``init``: the logits of the 9 model configurations of ``tests/fixtures/main_a7d3a1d/models.json`` (seeded,
  random init) on that fixture's input, and the largest difference of any initial weight;
- ``fingerprint``: the quickstart's fingerprint run (``ls.quickstart.fingerprint``: SoftFiLM, 2 epochs, 24
  synthetic recordings);
- ``regression``: the 2-epoch training of every variant that ``tests/test_regression_main.py`` compares with
  main at a7d3a1d (40 synthetic recordings, seed 3).

The first setting is the reference; the table gives, per quantity, the largest difference of every other
setting to it (0 means bit-identical) and whether the predicted classes, the best epoch and the count-based test
metrics are the same. Several minutes per setting on a 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
FIXTURES = TESTS / "fixtures" / "main_a7d3a1d"
VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")
PARTS = ("init", "fingerprint", "regression")
#: Test metrics that are ratios of counts: they move only when a predicted class does.
COUNT_METRICS = ("specificity", "sensitivity", "icbhi_score", "binary_specificity", "binary_sensitivity",
                 "binary_icbhi_score", "accuracy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--capabilities", nargs="+", default=["avx512", "avx2", "default"],
                   help="ATEN_CPU_CAPABILITY values, one process each (the first is the reference)")
    p.add_argument("--perturb", type=int, nargs="*", default=[4],
                   help="also run the native path with the init moved by up to K ulps (one run per K)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ulps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- one setting (a worker process) -----------------------------------------------------------------------------
def _perturbing(ulps: int):
    """Make ``ls.models.build_model`` move every initial weight by up to ``ulps`` ulps (0: unchanged)."""
    from pinning import perturb_ulps

    import ls.models

    if not ulps:
        return
    build = ls.models.build_model

    def build_and_perturb(*args, **kwargs):
        model = build(*args, **kwargs)
        perturb_ulps(model, ulps, seed=1234)
        return model

    ls.models.build_model = build_and_perturb


def _data_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.wav")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def measure_init() -> dict[str, Any]:
    import torch
    from test_regression_main import _build_from_old_block, _json

    inp = torch.load(FIXTURES / "input.pt")
    out = {}
    for case, entry in sorted(_json("models.json").items()):
        model = _build_from_old_block(entry["variant"], entry["model_config"])
        with torch.no_grad():
            logits = model(inp["spec"], inp["meta"])
        out[case] = {"logits": logits.double().tolist(),
                     "weights": {k: v.double().reshape(-1).tolist() for k, v in model.state_dict().items()
                                 if v.is_floating_point()}}
    return out


def measure_fingerprint(work: Path) -> dict[str, Any]:
    from ls.quickstart import fingerprint

    return fingerprint(work / "fingerprint")


def measure_regression(work: Path) -> dict[str, Any]:
    from test_regression_main import REGRESSION_DATA, _json

    from ls.config import config_from_dict
    from ls.config.upgrade import upgrade_config_v1
    from ls.data.synthetic import generate_icbhi
    from ls.runs.run import train_run

    data = work / "regression_data"
    generate_icbhi(data, **REGRESSION_DATA)
    out = {"data": _data_digest(data)}
    for variant in VARIANTS:
        raw, _ = upgrade_config_v1(_json("training.json")[variant]["best_skeleton"]["config"])
        raw["dataset"] = {**raw["dataset"], "data_folder": str(data)}
        raw["training"] = {**raw["training"], "checkpoint_dir": str(work / "checkpoints")}
        outcome = train_run(config_from_dict(raw, "a7d3a1d training config"), variant, progress=False)
        fit = outcome.fit
        out[variant] = {"best_epoch": outcome.best_epoch,
                        "train_loss": [float(r["train/loss"]) for r in fit.history],
                        "val_loss": [float(r["val/loss"]) for r in fit.history],
                        "test_loss": float(fit.test.loss),
                        "test": {k: float(v) for k, v in outcome.test_metrics.items()},
                        "predictions": "".join(str(int(c)) for c in fit.test.pred)}
    return out


def worker(args: argparse.Namespace) -> int:
    import torch

    sys.path.insert(0, str(TESTS))
    torch.set_num_threads(1)
    _perturbing(args.ulps)
    result: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability(), "ulps": args.ulps,
                              "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="ls-cpu-paths-") as tmp:
        for part in args.parts:
            if part == "init":
                result["init"] = measure_init()
            elif part == "fingerprint":
                result["fingerprint"] = measure_fingerprint(Path(tmp))
            else:
                result["regression"] = measure_regression(Path(tmp))
    args.out.write_text(json.dumps(result))
    return 0


# -- comparing settings -------------------------------------------------------------------------------------------
def max_abs_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between two equally shaped nests of numbers (inf: shapes differ)."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return float("inf")
    return float(np.max(np.abs(x - y))) if x.size else 0.0


def compare(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per quantity, how far ``other`` is from ``ref`` (see the module docstring)."""
    rows: dict[str, Any] = {}
    if "init" in ref and "init" in other:
        rows["init: logits, max |diff|"] = max(max_abs_diff(ref["init"][c]["logits"], other["init"][c]["logits"])
                                               for c in ref["init"])
        rows["init: weights, max |diff|"] = max(
            max_abs_diff(w, other["init"][c]["weights"][k]) for c in ref["init"]
            for k, w in ref["init"][c]["weights"].items())
    if "fingerprint" in ref and "fingerprint" in other:
        a, b = ref["fingerprint"], other["fingerprint"]
        rows["fingerprint: losses, max |diff|"] = max(
            max_abs_diff(a["numbers"][k], b["numbers"][k]) for k in ("train_loss", "val_loss", "test_loss"))
        rows["fingerprint: mean probabilities, max |diff|"] = max_abs_diff(a["numbers"]["mean_probabilities"],
                                                                          b["numbers"]["mean_probabilities"])
        rows["fingerprint: predictions, best epoch, count metrics equal"] = (
            a["predictions"] == b["predictions"] and a["best_epoch"] == b["best_epoch"] and a["test"] == b["test"])
    if "regression" in ref and "regression" in other:
        a, b = ref["regression"], other["regression"]
        rows["2-epoch runs: synthetic data identical"] = a["data"] == b["data"]
        rows["2-epoch runs: best epoch equal (variants)"] = sum(a[v]["best_epoch"] == b[v]["best_epoch"]
                                                                for v in VARIANTS)
        rows["2-epoch runs: predictions equal (variants)"] = sum(a[v]["predictions"] == b[v]["predictions"]
                                                                 for v in VARIANTS)
        rows["2-epoch runs: predicted classes changed (cycles)"] = sum(
            sum(x != y for x, y in zip(a[v]["predictions"], b[v]["predictions"])) for v in VARIANTS)
        rows["2-epoch runs: count metrics, max |diff|"] = max(
            abs(a[v]["test"][k] - b[v]["test"][k]) for v in VARIANTS for k in COUNT_METRICS)
        rows["2-epoch runs: losses, max |diff|"] = max(
            max(max_abs_diff(a[v][k], b[v][k]) for k in ("train_loss", "val_loss", "test_loss")) for v in VARIANTS)
        rows["2-epoch runs: losses, max relative diff"] = max(
            max_abs_diff(a[v][k], b[v][k]) / max(abs(x) for x in _flat(a[v][k]))
            for v in VARIANTS for k in ("train_loss", "val_loss", "test_loss"))
        rows["2-epoch runs: AUROC, max |diff|"] = max(
            abs(a[v]["test"][k] - b[v]["test"][k]) for v in VARIANTS for k in a[v]["test"] if "auroc" in k)
    return rows


def _flat(x: Any) -> list[float]:
    return [float(v) for v in x] if isinstance(x, list) else [float(x)]


def format_table(names: list[str], comparisons: list[dict[str, Any]]) -> str:
    """Quantities down, settings across (the reference first, all zeros/true by definition)."""
    keys = list(comparisons[0]) if comparisons else []
    width = max([12, *(len(n) for n in names)])
    lines = ["quantity".ljust(56) + "".join(n.rjust(width + 2) for n in names[1:])]
    for key in keys:
        cells = []
        for c in comparisons:
            v = c.get(key)
            cells.append(("yes" if v else "no") if isinstance(v, bool) else
                         (f"{v:.2e}" if isinstance(v, float) else str(v)))
        lines.append(key.ljust(56) + "".join(cell.rjust(width + 2) for cell in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    settings = [(cap, 0) for cap in args.capabilities] + [(args.capabilities[0], k) for k in args.perturb if k]
    results, names = [], []
    with tempfile.TemporaryDirectory(prefix="ls-cpu-paths-") as tmp:
        for cap, ulps in settings:
            out = Path(tmp) / f"{cap}_{ulps}.json"
            env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            cmd = [sys.executable, __file__, "--worker", "--ulps", str(ulps), "--out", str(out), "--parts",
                   *args.parts]
            print(f"[cpu_paths] ATEN_CPU_CAPABILITY={cap}" + (f", init moved by up to {ulps} ulps" if ulps else ""),
                  flush=True)
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            results.append(result)
            names.append(result["capability"] + (f"+{ulps}ulp" if ulps else ""))
    comparisons = [compare(results[0], r) for r in results[1:]]
    print(f"\nreference: {names[0]} (torch {results[0]['torch']}, 1 thread); differences to it:")
    print(format_table(names, comparisons))
    if args.json:
        slim = [{k: v for k, v in r.items() if k != "init"} for r in results]
        args.json.write_text(json.dumps({"settings": names, "comparisons": comparisons, "results": slim}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
