"""Train the same tiny SoftFiLM with two checkouts of ls and compare the results bit for bit.

    python scripts/compare_training.py OLD_CHECKOUT NEW_CHECKOUT [--epochs 2] [--recordings 24]

For a refactoring that must not change numbers (e.g. who declares SoftFiLM's mask parameter group): each
checkout trains, in its own process on one thread, the quickstart config on the same synthetic folder under
three optimiser settings that take every path of the mask group (the paper's: masks trained like the rest;
``use_differential_lr``: per-group rates, masks at 1.5 x without decay; ``mask_lr_scale`` with
``decay_exclude``). Weights, optimiser state, learning rates, weight decays and test metrics must be equal. On
one machine only: other CPUs may round differently. The epochs' wall times are the only numbers not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "paper": [],
    "differential": ["training.optimizer.use_differential_lr=true"],
    "mask_scale": ["training.optimizer.mask_lr_scale=10.0", "training.optimizer.decay_exclude=true"],
}


def train(checkout: Path, data: Path, out: Path, overrides: list[str], epochs: int) -> Path:
    """One run with ``checkout``'s ls (as a user runs it: its root script); returns the run folder."""
    args = [sys.executable, str(checkout / "ast_film_soft.py"), "--config", str(checkout / "configs" / "quickstart.yaml"),
            "--no-tracking", "--set", f"dataset.data_folder={data}", "--set", f"training.epochs={epochs}",
            "--set", "training.scheduler.warmup_epochs=0", "--set", f"training.checkpoint_dir={out}",
            "--set", f"dataset.cache_dir={out / 'cache'}"]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run(args, cwd=out, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: training failed:\n{done.stderr[-3000:]}")
    return next(p for p in out.iterdir() if p.is_dir() and (p / "run.json").is_file())


def differences(old: Path, new: Path) -> list[str]:
    import torch

    diffs = []
    for name in ("best.pt", "last.pt"):
        a = torch.load(old / name, weights_only=True)
        b = torch.load(new / name, weights_only=True)
        for key in sorted(set(a["model"]) | set(b["model"])):
            if key not in a["model"] or key not in b["model"] or not torch.equal(a["model"][key], b["model"][key]):
                diffs.append(f"{name}: weights {key}")
        if name == "last.pt":
            sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
            for index in sorted(set(sa) | set(sb)):
                for field in sorted(set(sa.get(index, {})) | set(sb.get(index, {}))):
                    va, vb = sa.get(index, {}).get(field), sb.get(index, {}).get(field)
                    if va is None or vb is None or not torch.equal(torch.as_tensor(va), torch.as_tensor(vb)):
                        diffs.append(f"{name}: optimiser state {index}.{field}")
            ga, gb = a["optimizer"]["param_groups"], b["optimizer"]["param_groups"]
            keys = ("name", "lr", "weight_decay", "params", "scheduled_decay", "lr_scale")
            if [[g.get(k) for k in keys] for g in ga] != [[g.get(k) for k in keys] for g in gb]:
                diffs.append(f"{name}: optimiser groups {[[g.get(k) for k in keys[:3]] for g in ga]} vs "
                             f"{[[g.get(k) for k in keys[:3]] for g in gb]}")
        ha, hb = (_numbers(state["trainer"]["history"]) for state in (a, b))
        if ha != hb:
            keys = sorted({k for ea, eb in zip(ha, hb) for k in set(ea) | set(eb) if ea.get(k) != eb.get(k)})
            diffs.append(f"{name}: per-epoch history ({', '.join(keys[:8])})")
    ta = json.loads((old / "run.json").read_text())["test"]
    tb = json.loads((new / "run.json").read_text())["test"]
    if ta != tb:
        diffs.append(f"test metrics: {ta} vs {tb}")
    return diffs


#: History entries that measure the machine, not the training (wall time).
TIMING_KEYS = ("epoch_seconds",)


def _numbers(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k not in TIMING_KEYS} for epoch in history]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--recordings", type=int, default=24)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        subprocess.run([sys.executable, "-m", "ls.data.synthetic", str(data), "--recordings", str(args.recordings)],
                       env={**os.environ, "PYTHONPATH": str(args.new)}, check=True, capture_output=True)
        failed = False
        for name, overrides in SETTINGS.items():
            runs = []
            for label, checkout in (("old", args.old), ("new", args.new)):
                out = work / name / label
                out.mkdir(parents=True)
                runs.append(train(checkout.resolve(), data, out, overrides, args.epochs))
            diffs = differences(*runs)
            failed |= bool(diffs)
            print(f"{name}: " + ("identical (weights, optimiser state and groups, history, test metrics)"
                                 if not diffs else "DIFFERENT: " + "; ".join(diffs[:10])), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
