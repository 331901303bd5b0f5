"""Benchmark: one training epoch and one evaluation pass on the full-size synthetic ICBHI stand-in.

    python -m ls.data.synthetic /tmp/icbhi_full --like ../shared/data/icbhi-meta/icbhi_metadata.csv --workers 2
    python benchmarks/epoch.py --data /tmp/icbhi_full [--config configs/ast_film_soft_config.yaml]
        [--variant ast_film_soft] [--set models.ast_film_soft.weights.source=none ...] [--max-batches N]

Reports samples/s for training and evaluation and the peak resident memory (RSS) of the process. The
stated config is printed with the numbers; by default the paper's SoftFiLM config with random init (no
AudioSet file needed), batch 16, 128 x 1024 inputs, on whatever ``training.device`` resolves to.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="ICBHI-format folder (e.g. the synthetic full-size stand-in)")
    p.add_argument("--config", default=str(REPO / "configs" / "ast_film_soft_config.yaml"))
    p.add_argument("--variant", default="ast_film_soft")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--max-batches", type=int, default=None, help="stop each pass after N batches")
    args = p.parse_args(argv)

    import torch

    from ls.config import load_config
    from ls.data import build_datasets, build_loaders
    from ls.engine.trainer import Trainer
    from ls.models import build_model

    cfg = load_config(args.config, [f"dataset.data_folder={args.data}",
                                    f"models.{args.variant}.weights.source=none", *args.overrides])  # fmt: skip
    t0 = time.perf_counter()
    datasets = build_datasets(cfg)
    loaders = build_loaders(cfg, datasets)
    prep = time.perf_counter() - t0
    if args.max_batches:
        loaders.train = _limit(loaders.train, args.max_batches)
        loaders.test = _limit(loaders.test, args.max_batches)
    model = build_model(cfg.model(args.variant), datasets.metadata_spec)
    trainer = Trainer(model, loaders, cfg, None, checkpoint_meta={"variant": args.variant}, progress=False)
    trainer._begin_epoch(0)
    t0 = time.perf_counter()
    trainer.train_one_epoch(0)
    train_s = time.perf_counter() - t0
    n_train = len(loaders.train) * cfg.dataset.batch_size
    t0 = time.perf_counter()
    result = trainer.evaluate(loaders.test)
    eval_s = time.perf_counter() - t0
    n_eval = len(result.outputs["logits"])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"config: {args.config} variant={args.variant} model_size={cfg.model(args.variant).model_size} "
          f"input={cfg.dataset.h}x{cfg.dataset.w} batch={cfg.dataset.batch_size} device={trainer.device} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    print(f"data preparation (feature cache): {prep:.1f} s")
    print(f"train: {n_train} cycles in {train_s:.1f} s = {n_train / train_s:.2f} samples/s")
    print(f"eval:  {n_eval} cycles in {eval_s:.1f} s = {n_eval / eval_s:.2f} samples/s")
    print(f"peak RSS: {rss_mb:.0f} MiB")
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
