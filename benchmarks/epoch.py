"""Benchmark: one training epoch and one evaluation pass on the full-size synthetic ICBHI stand-in.

    python -m ls.data.synthetic /tmp/icbhi_full --like ../shared/data/icbhi-meta/icbhi_metadata.csv --workers 2
    python benchmarks/epoch.py --data /tmp/icbhi_full [--config configs/ast_film_soft_config.yaml]
        [--variant ast_film_soft] [--device auto|cpu|cuda] [--model-size base384] [--stride 10]
        [--amp auto|bf16|fp16|false] [--compile] [--tf32 | --no-tf32] [--workers N]
        [--set dataset.batch_size=16 ...] [--max-batches N] [--warmup N]

Reported for training (forward, backward, optimiser step, with data loading and augmentation) and evaluation
(forward only): samples/s, mean step time, FLOPs per sample and the achieved fraction of the device's matmul
peak (measured here, for fp32 and bf16, with ``torch.mm``), the loader on its own (samples/s with the run's
workers) against the rate the loop needed, the share of the epoch the loop waited for data and whether the
loader was the bottleneck, the attention kernel SDPA chose, peak RSS and, on CUDA, peak GPU memory. The stated
config is printed first. Defaults: the paper's SoftFiLM config (base384, stride 10, 128 mel bins x 1024
frames, batch 16, the paper's augmentations) with random init (no AudioSet file needed), on whatever
``--device`` resolves to.

``--warmup N`` (default 1) runs N untimed batches of each pass first (CUDA/cuBLAS initialisation; with
``--compile`` the compilation). ``--max-batches N`` stops each timed pass after N batches (the first N of a
shuffled epoch / of the test split); full-pass times are then extrapolated linearly and printed as such.

On a small CPU (2 cores) the paper config takes hours per epoch; a config that finishes in minutes there:

    python benchmarks/epoch.py --data /tmp/icbhi_full --device cpu --model-size tiny224 --stride 16 \\
        --max-batches 25

On a GPU (workers: every CPU but one by default, ``dataset.num_workers: auto``):

    python benchmarks/epoch.py --data /tmp/icbhi_full --device cuda [--compile]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/lsbench.py

#: The loop waiting for data longer than this share of the epoch, or a loader slower than the loop's
#: rate, counts as loader-bound.
WAIT_SHARE_LIMIT = 0.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="ICBHI-format folder (e.g. the synthetic full-size stand-in)")
    p.add_argument("--config", default=str(REPO / "configs" / "ast_film_soft_config.yaml"))
    p.add_argument("--variant", default="ast_film_soft")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="training.device (default: the config's, 'auto' in the paper configs)")
    p.add_argument("--model-size", default=None, help="models.<variant>.model_size (e.g. tiny224)")
    p.add_argument("--stride", type=int, default=None, help="models.<variant>.fstride and tstride")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "false"), default=None,
                   help="training.amp (default: the config's, auto; CPU runs are always fp32)")
    p.add_argument("--compile", action="store_true", help="training.compile=true (torch.compile)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None,
                   help="training.tf32 (TF32 matmuls of fp32 runs on CUDA; default: the config's, true)")
    p.add_argument("--workers", default=None, help="dataset.num_workers (a number or auto)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-batches", type=int, default=None, help="stop each timed pass after N batches")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches of each pass before timing")
    args = p.parse_args(argv)
    if args.max_batches is not None and args.max_batches < 1:
        p.error(f"--max-batches must be at least 1, got {args.max_batches}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
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
    if args.amp:
        out.append(f"training.amp={args.amp}")
    if args.compile:
        out.append("training.compile=true")
    if args.tf32 is not None:
        out.append(f"training.tf32={str(args.tf32).lower()}")
    if args.workers is not None:
        out.append(f"dataset.num_workers={args.workers}")
    return out + list(args.overrides)


def describe(args: argparse.Namespace, cfg, trainer, threads: int, loaders, full: dict[str, int]) -> str:
    """One line per aspect of the measured setting (printed before the numbers)."""
    import torch

    from ls.models.backbone import patch_grid

    device = trainer.device
    m = cfg.model(args.variant)
    grid = patch_grid(m.input_fdim, m.input_tdim, m.fstride, m.tstride)
    eval_bs = cfg.dataset.eval_batch_size or cfg.dataset.batch_size
    capped = f", capped at {args.max_batches} batches per pass" if args.max_batches else ""
    hw = f"device={device}"
    if device.type == "cuda":
        hw += f" ({torch.cuda.get_device_name(device)})"
    hw += (f", torch threads={threads}, precision={trainer.precision.name} (training.amp={cfg.training.amp}), "
           f"tf32={cfg.training.tf32 and device.type == 'cuda'}, compile={cfg.training.compile}, "
           f"deterministic={cfg.training.deterministic}")
    model = (f"model: {m.model_size}, stride {m.fstride}x{m.tstride}, input {m.input_fdim}x{m.input_tdim} "
             f"(mel bins x frames) -> {grid[0]}x{grid[1]} = {grid[0] * grid[1]} patches")
    data = (f"data: {args.data}, {full['train']} train / {full['test']} test cycles, batch "
            f"{cfg.dataset.batch_size} (eval {eval_bs}), workers train {loaders.train.num_workers} / eval "
            f"{loaders.test.num_workers} (dataset.num_workers={cfg.dataset.num_workers}), "
            f"raw_augment={cfg.audio.raw_augment}, mel_norm={cfg.audio.mel_norm}")
    passes = (f"passes: train {len(loaders.train)} batches, eval {len(loaders.test)} batches (test split){capped}, "
              f"{args.warmup} warm-up batch(es) each")
    return "\n".join([f"config: {args.config} variant={args.variant} (random init)", model, data, passes, hw])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch
    from lsbench import attention_backends, flops_per_call, matmul_peak_tflops, sync

    from ls.config import load_config
    from ls.data import build_datasets, build_loaders
    from ls.engine.inference import to_device
    from ls.engine.trainer import Trainer
    from ls.models import build_model

    cfg = load_config(args.config, overrides(args))
    t0 = time.perf_counter()
    datasets = build_datasets(cfg)
    loaders = build_loaders(cfg, datasets)
    prep = time.perf_counter() - t0
    full = {"train": len(loaders.train) * cfg.dataset.batch_size, "test": len(loaders.test.dataset),
            "train_batches": len(loaders.train), "test_batches": len(loaders.test)}  # fmt: skip
    model = build_model(cfg.model(args.variant), datasets.metadata_spec)
    trainer = Trainer(model, loaders, cfg.training, cfg.output_mode, None, seed=cfg.seed,
                      checkpoint_meta={"variant": args.variant}, progress=False)
    device = trainer.device
    print(describe(args, cfg, trainer, torch.get_num_threads(), loaders, full), flush=True)
    print(f"data preparation (cycle table, splits, feature cache): {prep:.1f} s", flush=True)

    peaks = {"fp32": matmul_peak_tflops(device, torch.float32), "bf16": matmul_peak_tflops(device, torch.bfloat16)}
    tf32_note = " (TF32 on)" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else ""
    print(f"matmul peak (torch.mm, best of up to 10): fp32{tf32_note} {peaks['fp32']:.2f} TFLOP/s, "
          f"bf16 {peaks['bf16']:.2f} TFLOP/s", flush=True)

    # FLOPs and the attention kernel: one eager step of the unwrapped model on a real batch (untimed)
    sample = next(iter(loaders.train))
    spec, meta = to_device(sample, device)
    labels = sample["label"].to(device)

    def train_step() -> None:
        with trainer.precision.autocast(device.type):
            logits = model(spec, meta)
        trainer.loss_fn(logits.float(), labels).backward()

    def eval_step() -> None:
        with torch.no_grad(), trainer.precision.autocast(device.type):
            model(spec, meta)

    model.train()
    train_flops = flops_per_call(train_step) / len(labels)
    eval_flops = flops_per_call(eval_step) / len(labels)
    backends = attention_backends(eval_step)
    model.zero_grad(set_to_none=True)
    print(f"attention (SDPA) kernel: {', '.join(backends) or 'none found'}; model FLOPs per sample: train "
          f"{train_flops / 1e9:.1f} G, eval {eval_flops / 1e9:.1f} G", flush=True)

    # each loader on its own (persistent workers start here), then warm-up batches
    trainer._begin_epoch(0)
    loader_rates = {name: _loader_rate(loader, args.max_batches)
                    for name, loader in (("train", loaders.train), ("eval", loaders.test))}
    if args.warmup:
        loaders.train, loaders.test = _Timed(loaders.train, args.warmup), _Timed(loaders.test, args.warmup)
        trainer.train_one_epoch(0)
        trainer.evaluate(loaders.test)
        loaders.train, loaders.test = loaders.train.loader, loaders.test.loader
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    loaders.train = _Timed(loaders.train, args.max_batches)
    loaders.test = _Timed(loaders.test, args.max_batches)
    trainer._begin_epoch(0)
    sync(device)
    t0 = time.perf_counter()
    trainer.train_one_epoch(0)
    sync(device)
    train_s = time.perf_counter() - t0
    n_train = len(loaders.train) * cfg.dataset.batch_size
    t0 = time.perf_counter()
    result = trainer.evaluate(loaders.test)
    sync(device)
    eval_s = time.perf_counter() - t0
    n_eval = len(result.outputs)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    passes = (("train", n_train, train_s, full["train"], loaders.train, train_flops),
              ("eval", n_eval, eval_s, full["test"], loaders.test, eval_flops))
    for name, n, secs, total, loader, flops in passes:
        rate = n / secs
        line = f"{name + ':':6} {n} cycles in {secs:.1f} s = {rate:.2f} samples/s, {1000 * secs / len(loader):.1f} ms/step"
        if n < total:
            line += f" (full pass of {total} cycles extrapolated: {total / rate / 60:.1f} min)"
        print(line)
        achieved = flops * rate / 1e12
        print(f"{'':7}{achieved:.3f} TFLOP/s = {100 * achieved / peaks['fp32']:.1f} % of the fp32 peak, "
              f"{100 * achieved / peaks['bf16']:.1f} % of the bf16 peak")
        alone, waited = loader_rates[name], loader.waited / secs
        bound = alone < rate or waited > WAIT_SHARE_LIMIT
        print(f"{'':7}loader alone {alone:.1f} samples/s with {loader.loader.num_workers} worker(s) = "
              f"{alone / rate:.2f}x the pass's rate; the pass waited for data {100 * waited:.0f} % of its time; "
              f"loader-bound: {'yes' if bound else 'no'}")
    print(f"(loader-bound: the loader alone is slower than the pass, or the pass waited for data more than "
          f"{100 * WAIT_SHARE_LIMIT:.0f} % of its time)")
    print(f"peak RSS: {rss_mb:.0f} MiB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return 0


def _loader_rate(loader, max_batches: int | None) -> float:
    """Samples/s of ``loader`` iterated on its own for ``max_batches`` batches (all when None)."""
    n = min(max_batches or len(loader), len(loader))
    t0 = time.perf_counter()
    samples = sum(len(batch["label"]) for _, batch in zip(range(n), loader))
    return samples / (time.perf_counter() - t0)


class _Timed:
    """A loader cut to its first ``n`` batches (all when None) that adds up the time spent waiting for them;
    keeps ``dataset``/``sampler``/``batch_size``/``generator`` for the trainer."""

    def __init__(self, loader, n: int | None) -> None:
        self.loader, self.n, self.waited = loader, n, 0.0
        self.dataset, self.sampler, self.batch_size = loader.dataset, loader.sampler, loader.batch_size
        self.generator = getattr(loader, "generator", None)

    def __len__(self) -> int:
        return len(self.loader) if self.n is None else min(self.n, len(self.loader))

    def __iter__(self):
        it = iter(self.loader)
        for _ in range(len(self)):
            t0 = time.perf_counter()
            batch = next(it)
            self.waited += time.perf_counter() - t0
            yield batch


if __name__ == "__main__":
    sys.exit(main())
