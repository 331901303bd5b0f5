"""Benchmark: one training epoch and one evaluation pass on the full-size synthetic ICBHI stand-in.

    python -m ls.data.synthetic /tmp/icbhi_full --like ../shared/data/icbhi-meta/icbhi_metadata.csv --workers 2
    python benchmarks/epoch.py --data /tmp/icbhi_full [--config configs/ast_film_soft_config.yaml]
        [--variant ast_film_soft] [--device auto|cpu|cuda] [--model-size base384] [--stride 10]
        [--set dataset.batch_size=16 ...] [--max-batches N]

Reports samples/s for training (forward, backward, optimiser step, including data loading and
augmentation) and evaluation (forward only), the peak resident memory (RSS) of the process and, on CUDA, the
peak GPU memory. The stated config is printed first. Defaults: the paper's SoftFiLM config (base384,
stride 10, 128 mel bins x 1024 frames, batch 16, the paper's augmentations) with random init (no AudioSet
file needed), on whatever ``--device`` resolves to.

``--max-batches N`` stops each pass after N batches (the first N of a shuffled epoch / of the test split);
the full-pass times are then extrapolated linearly from the measured rate and printed as such.

On a small CPU (2 cores) the paper config takes hours per epoch; a config that finishes in minutes there:

    python benchmarks/epoch.py --data /tmp/icbhi_full --device cpu --model-size tiny224 --stride 16 \\
        --max-batches 25

On a GPU (feature-cache loading in worker processes):

    python benchmarks/epoch.py --data /tmp/icbhi_full --device cuda --set dataset.num_workers=8
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="ICBHI-format folder (e.g. the synthetic full-size stand-in)")
    p.add_argument("--config", default=str(REPO / "configs" / "ast_film_soft_config.yaml"))
    p.add_argument("--variant", default="ast_film_soft")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="training.device (default: the config's, 'auto' in the paper configs)")
    p.add_argument("--model-size", default=None, help="models.<variant>.model_size (e.g. tiny224)")
    p.add_argument("--stride", type=int, default=None, help="models.<variant>.fstride and tstride")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-batches", type=int, default=None, help="stop each pass after N batches")
    args = p.parse_args(argv)
    if args.max_batches is not None and args.max_batches < 1:
        p.error(f"--max-batches must be at least 1, got {args.max_batches}")
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides the options stand for (explicit ``--set`` entries last, so they win)."""
    out = [f"dataset.data_folder={args.data}", f"models.{args.variant}.weights.source=none"]
    if args.device:
        out.append(f"training.device={args.device}")
    if args.model_size:
        out.append(f"models.{args.variant}.model_size={args.model_size}")
    if args.stride:
        out += [f"models.{args.variant}.fstride={args.stride}", f"models.{args.variant}.tstride={args.stride}"]
    return out + list(args.overrides)


def describe(args: argparse.Namespace, cfg, device, threads: int, loaders, full: dict[str, int]) -> str:
    """One line per aspect of the measured setting (printed before the numbers)."""
    from ls.models.backbone import patch_grid

    m = cfg.model(args.variant)
    grid = patch_grid(m.input_fdim, m.input_tdim, m.fstride, m.tstride)
    eval_bs = cfg.dataset.eval_batch_size or cfg.dataset.batch_size
    capped = f", capped at {args.max_batches} batches per pass" if args.max_batches else ""
    hw = f"device={device}"
    if device.type == "cuda":
        import torch

        hw += f" ({torch.cuda.get_device_name(device)}), amp={cfg.training.amp}"
    else:
        hw += f", torch threads={threads}"
    model = (f"model: {m.model_size}, stride {m.fstride}x{m.tstride}, input {m.input_fdim}x{m.input_tdim} "
             f"(mel bins x frames) -> {grid[0]}x{grid[1]} = {grid[0] * grid[1]} patches")
    data = (f"data: {args.data}, {full['train']} train / {full['test']} test cycles, batch "
            f"{cfg.dataset.batch_size} (eval {eval_bs}), num_workers={cfg.dataset.num_workers}, "
            f"raw_augment={cfg.audio.raw_augment}, mel_norm={cfg.audio.mel_norm}")
    passes = f"passes: train {len(loaders.train)} batches, eval {len(loaders.test)} batches (test split){capped}"
    return "\n".join([f"config: {args.config} variant={args.variant} (random init)", model, data, passes, hw])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from ls.config import load_config
    from ls.data import build_datasets, build_loaders
    from ls.engine.trainer import Trainer
    from ls.models import build_model

    cfg = load_config(args.config, overrides(args))
    t0 = time.perf_counter()
    datasets = build_datasets(cfg)
    loaders = build_loaders(cfg, datasets)
    prep = time.perf_counter() - t0
    full = {"train": len(loaders.train) * cfg.dataset.batch_size, "test": len(loaders.test.dataset),
            "train_batches": len(loaders.train), "test_batches": len(loaders.test)}  # fmt: skip
    if args.max_batches:
        loaders.train = _limit(loaders.train, args.max_batches)
        loaders.test = _limit(loaders.test, args.max_batches)
    model = build_model(cfg.model(args.variant), datasets.metadata_spec)
    trainer = Trainer(model, loaders, cfg.training, cfg.output_mode, None, seed=cfg.seed,
                      checkpoint_meta={"variant": args.variant}, progress=False)
    print(describe(args, cfg, trainer.device, torch.get_num_threads(), loaders, full), flush=True)
    print(f"data preparation (cycle table, splits, feature cache): {prep:.1f} s", flush=True)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)

    trainer._begin_epoch(0)
    sync()
    t0 = time.perf_counter()
    trainer.train_one_epoch(0)
    sync()
    train_s = time.perf_counter() - t0
    n_train = len(loaders.train) * cfg.dataset.batch_size
    t0 = time.perf_counter()
    result = trainer.evaluate(loaders.test)
    sync()
    eval_s = time.perf_counter() - t0
    n_eval = len(result.outputs)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, n, secs, total in (("train", n_train, train_s, full["train"]), ("eval", n_eval, eval_s, full["test"])):
        line = f"{name + ':':6} {n} cycles in {secs:.1f} s = {n / secs:.2f} samples/s"
        if n < total:
            line += f" (full pass of {total} cycles extrapolated: {total / (n / secs) / 60:.1f} min)"
        print(line)
    print(f"peak RSS: {rss_mb:.0f} MiB")
    if trainer.device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(trainer.device) / 2**20:.0f} MiB")
    return 0


class _limit:
    """A loader cut to its first ``n`` batches (keeps ``dataset``/``sampler``/``batch_size``)."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, n
        self.dataset, self.sampler, self.batch_size = loader.dataset, loader.sampler, loader.batch_size
        self.generator = getattr(loader, "generator", None)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                return
            yield batch


if __name__ == "__main__":
    sys.exit(main())
