"""Benchmark of the data pipeline: first ``build_datasets`` (computes the feature cache) vs a cached rebuild.

Usage::

    python benchmarks/data_pipeline.py [--data ./data/synthetic-full] [--like .../icbhi_metadata.csv]
    python benchmarks/data_pipeline.py --augment [--data DIR] [--items 100] [--workers 1 2 4] [--target 400]

Generates the full-size synthetic stand-in for ICBHI once (``python -m ls.data.synthetic OUT --like CSV``: 920
recordings, 6,898 cycles), then runs each measurement in a fresh subprocess (so peak RSS is that of one build)
and prints a JSON report: wall time and peak RSS of the first build and of the cached rebuild, plus the time to
read items from the memory-mapped cache. Targets: rebuild >= 20x faster than the first build; rebuild peak RSS
< 1.5 GB at 6,898 x 1024 x 128.

``--augment`` measures training items with augmentation instead, at the paper's input (10 s cycles, 128 mel
bins x 1024 frames): per augmentation of the paper's lists, on alone with p = 1 (``none``: the cached features;
``paper``: the paper's lists with their probabilities), items/s in one process with one torch thread, i.e. per
core; then the training loader with the paper's augmentations and ``--workers`` persistent worker processes.
With ``--target R`` (a GPU's training samples/s) it prints the cores the loader needs to deliver 2 R. The
per-item cost does not depend on the size of the data set: any ICBHI-format folder will do (e.g.
``python -m ls.data.synthetic /tmp/syn --recordings 60``).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_LIKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "icbhi-meta" / "icbhi_metadata.csv"


def measure(data: Path, cache_dir: Path, cache_workers: int | None, items: int) -> dict:
    """One build in this process; returns timings and peak RSS (MiB)."""
    from ls.config import config_from_dict
    from ls.data import build_datasets

    dataset = {"data_folder": str(data), "cache_dir": str(cache_dir), "cache_workers": cache_workers}
    cfg = config_from_dict({"dataset": dataset})
    t0 = time.perf_counter()
    datasets = build_datasets(cfg)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = min(items, len(datasets.train))
    for i in range(n):
        datasets.train[i]
    read_s = time.perf_counter() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sizes = {name: len(ds) if ds is not None else 0 for name, ds in zip(("train", "val", "test"), datasets)}
    return {
        "build_s": round(build_s, 2),
        "peak_rss_mib": round(self_rss, 1),
        "peak_rss_worker_mib": round(child_rss, 1),
        "items_read": n,
        "ms_per_item": round(1000 * read_s / max(n, 1), 3),
        "cycles": sizes,
        "spec_shape": list(datasets.train[0]["spec"].shape),
    }


#: Augmentations measured by ``--augment``, each on alone (the waveform ones with the paper's settings).
AUGMENTS = ("none", "noise", "speed", "loudness", "vtlp", "pitch", "crop", "SpecAugment", "paper")


def augment_config(data: Path, cache_dir: Path, kind: str, workers: int = 0):
    """The paper's input with only augmentation ``kind`` on (p = 1), or none, or the paper's lists."""
    from ls.config import config_from_dict
    from ls.data.config import PAPER_SPEC_AUG, PAPER_WAVE_AUG

    dataset = {"data_folder": str(data), "cache_dir": str(cache_dir), "num_workers": workers, "batch_size": 16}
    audio: dict = {"raw_augment": kind != "none"}
    if kind == "SpecAugment":
        audio.update(wave_aug=[], spec_aug=[{**vars(PAPER_SPEC_AUG[0]), "p": 1.0}])
    elif kind not in ("none", "paper"):
        entry = next(vars(a) for a in PAPER_WAVE_AUG if a.type == kind)
        audio.update(wave_aug=[{**entry, "p": 1.0}], spec_aug=[])
    return config_from_dict({"dataset": dataset, "audio": audio, "training": {"device": "cpu"}})


def measure_augment(args: argparse.Namespace, cache_dir: Path) -> dict:
    """Items/s per core for each augmentation, then the paper's mix through loaders with workers."""
    import os

    import torch

    from ls.data import build_datasets, build_loaders

    torch.set_num_threads(1)  # one core, as in a DataLoader worker
    report: dict = {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "per_core": {}}
    for kind in AUGMENTS:
        train = build_datasets(augment_config(args.data, cache_dir, kind)).train
        n = min(args.items, len(train))
        train[0]  # opens the memory maps
        t0 = time.perf_counter()
        for i in range(n):
            train[i]
        secs = time.perf_counter() - t0
        report["per_core"][kind] = {"items_per_s": round(n / secs, 1), "ms_per_item": round(1000 * secs / n, 2)}
        print(f"{kind:12} {1000 * secs / n:8.2f} ms/item {n / secs:8.1f} items/s per core", file=sys.stderr)
    paper = report["per_core"]["paper"]["items_per_s"]
    report["loader"] = {}
    for workers in args.workers:
        cfg = augment_config(args.data, cache_dir, "paper", workers)
        loaders = build_loaders(cfg, build_datasets(cfg))
        loaders.set_epoch(0)
        batches = max(1, min(len(loaders.train), args.items // cfg.dataset.batch_size))
        for _ in zip(range(1), loaders.train):  # starts the persistent workers
            pass
        t0 = time.perf_counter()
        for _ in zip(range(batches), loaders.train):
            pass
        rate = batches * cfg.dataset.batch_size / (time.perf_counter() - t0)
        report["loader"][str(workers)] = {"samples_per_s": round(rate, 1),
                                          "per_worker": round(rate / max(workers, 1), 1)}
        print(f"loader, {workers} worker(s): {rate:.1f} samples/s", file=sys.stderr)
    if args.target:
        report["target"] = {"training_samples_per_s": args.target, "loader_needs": 2 * args.target,
                            "cores_needed_at_measured_rate": round(2 * args.target / paper, 1)}
    return report


def run_measurement(args: argparse.Namespace, cache_dir: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        "--data",
        str(args.data),
        "--cache-dir",
        str(cache_dir),
        "--items",
        str(args.items),
    ]
    if args.cache_workers is not None:
        cmd += ["--cache-workers", str(args.cache_workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic-full"))
    parser.add_argument("--like", type=Path, default=DEFAULT_LIKE, help="cycle table whose structure to copy")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: <data>/.ls_cache-bench")
    parser.add_argument("--cache-workers", type=int, default=None, help="default: all CPUs")
    parser.add_argument("--gen-workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=500, help="training items read after each build")
    parser.add_argument("--augment", action="store_true", help="items/s per core per augmentation (see above)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="--augment: loader workers")
    parser.add_argument("--target", type=float, default=None, help="--augment: a GPU's training samples/s")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or args.data / ".ls_cache-bench"

    if args.augment:
        if not args.data.is_dir():
            raise SystemExit(f"--data {args.data} is not a folder (generate one with python -m ls.data.synthetic)")
        print(json.dumps({"data": str(args.data), **measure_augment(args, cache_dir)}, indent=1))
        return 0
    if args.measure:
        print(json.dumps(measure(args.data, cache_dir, args.cache_workers, args.items)))
        return 0

    report: dict = {"data": str(args.data)}
    if not (args.data / "synthetic_info.json").is_file():
        if not args.like.is_file():
            raise SystemExit(f"--like {args.like} does not exist (needed to generate {args.data})")
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ls.data.synthetic",
                str(args.data),
                "--like",
                str(args.like),
                "--workers",
                str(args.gen_workers),
            ],
            check=True,
        )
        report["generate_s"] = round(time.perf_counter() - t0, 1)
    shutil.rmtree(cache_dir, ignore_errors=True)
    report["first_build"] = run_measurement(args, cache_dir)
    report["cached_rebuild"] = run_measurement(args, cache_dir)
    report["cache_mib"] = round(sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) / 2**20, 1)
    report["speedup"] = round(report["first_build"]["build_s"] / report["cached_rebuild"]["build_s"], 1)
    report["targets_met"] = {
        "speedup>=20": report["speedup"] >= 20,
        "rebuild_rss<1.5GB": report["cached_rebuild"]["peak_rss_mib"] < 1536,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
