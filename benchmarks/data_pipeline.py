"""Benchmark of the data pipeline: first ``build_datasets`` (computes the feature cache) vs a cached rebuild.

Usage::

    python benchmarks/data_pipeline.py [--data ./data/synthetic-full] [--like .../icbhi_metadata.csv]

Generates the full-size synthetic stand-in for ICBHI once (``python -m ls.data.synthetic OUT --like CSV``: 920
recordings, 6,898 cycles), then runs each measurement in a fresh subprocess (so peak RSS is that of one build)
and prints a JSON report: wall time and peak RSS of the first build and of the cached rebuild, plus the time to
read items from the memory-mapped cache. Targets: rebuild >= 20x faster than the first build; rebuild peak RSS
< 1.5 GB at 6,898 x 1024 x 128.
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
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or args.data / ".ls_cache-bench"

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
