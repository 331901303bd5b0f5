"""One training step (forward, backward, AdamW step) per model variant, side by side with Hugging Face AST.

Measures, in one process and on the same input:

- ls variants built by ``ls.models.build_model`` (baseline ``ast``; ``ast_film_soft`` with every layer
  conditioned, or with ``--layers paper`` its own layers; optionally the others), fp32;
- ``transformers.ASTForAudioClassification`` of the same width/depth/input, ``attn_implementation="sdpa"``;
- an fp32 matmul peak (square ``torch.mm``) on the same device, as the roofline for the achieved GFLOP/s.

Reported per model: median step time, samples/s, ratio of HF's step time to ours (> 1 = ls faster), FLOPs
per step (``FlopCounterMode`` on one step, plus the CPU attention kernel it cannot see), the achieved fraction
of the matmul peak, and the number of (non-view) aten kernels its forward and backward dispatch: on a GPU
each is about one launch, so the difference between two models there is their launch overhead, a cost a CPU
can count but not time. The attention kernel SDPA chose is printed once per config. Usage::

    python benchmarks/train_step.py                      # default configs on CPU
    python benchmarks/train_step.py --configs tiny --steps 3 --variants ast ast_film_soft ast_tafilm
    python benchmarks/train_step.py --device cuda --configs base

Not a test: it takes minutes on a small CPU. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/lsbench.py

from lsbench import attention_backends, flops_per_call, kernels_per_call, matmul_peak_tflops, sync

from ls.data.icbhi import full_metadata_spec
from ls.models import build_model, get_variant
from ls.models.backbone import AST_SIZES


@dataclass(frozen=True)
class BenchConfig:
    name: str
    model_size: str
    frames: int  # T
    mel: int  # F
    batch: int


CONFIGS = {
    "tiny": BenchConfig("tiny224 1024x128 b4", "tiny224", frames=1024, mel=128, batch=4),
    "base": BenchConfig("base384 256x128 b4", "base384", frames=256, mel=128, batch=4),
    "base1024": BenchConfig("base384 1024x128 b2", "base384", frames=1024, mel=128, batch=2),
}
HF_LABEL = "hf ASTForAudioClassification"
META_SPEC = full_metadata_spec()


def make_batch(cfg: BenchConfig, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b = cfg.batch
    batch = {
        "spec": torch.randn(b, cfg.frames, cfg.mel, generator=g),
        "device": torch.randint(1, META_SPEC.factor("device").size, (b,), generator=g),
        "site": torch.randint(1, META_SPEC.factor("site").size, (b,), generator=g),
        "cont": torch.randn(b, META_SPEC.cont_dim, generator=g),
        "label": torch.randint(0, 2, (b,), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def make_optimizer(model: nn.Module, fused: bool) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # fused=True: one kernel for the whole update (CPU and CUDA) instead of torch's default foreach loop
    return torch.optim.AdamW(params, lr=1e-5, fused=True) if fused else torch.optim.AdamW(params, lr=1e-5)


def ls_step_fn(
    variant: str, cfg: BenchConfig, device: torch.device, fused: bool = False, layers: str = "all"
) -> tuple[nn.Module, Callable[..., None]]:
    depth = AST_SIZES[cfg.model_size].depth
    options = get_variant(variant).options
    # all: the worst case, every block modulated; paper: the variant's own conditioned layers (e.g. 10-11)
    all_layers = layers == "all" and hasattr(options(), "conditioned_layers")
    extra = {"conditioned_layers": list(range(depth))} if all_layers else {}
    mcfg = options(variant=variant, label_dim=2, model_size=cfg.model_size, input_fdim=cfg.mel,
                   input_tdim=cfg.frames, **extra)
    model = build_model(mcfg, META_SPEC).to(device).train()
    opt = make_optimizer(model, fused)

    def step(batch: dict, optimise: bool = True) -> None:
        meta = {k: batch[k] for k in ("device", "site", "cont")}
        logits = model(batch["spec"], meta)
        loss = F.cross_entropy(logits, batch["label"])
        aux = model.auxiliary_losses()
        if aux:
            loss = loss + sum(aux.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optimise:
            opt.step()

    return model, step


def hf_step_fn(
    cfg: BenchConfig, device: torch.device, fused: bool = False
) -> tuple[nn.Module, Callable[[dict], None]]:
    from transformers import ASTConfig, ASTForAudioClassification

    arch = AST_SIZES[cfg.model_size]
    hf_cfg = ASTConfig(
        hidden_size=arch.embed_dim,
        num_attention_heads=arch.num_heads,
        num_hidden_layers=arch.depth,
        intermediate_size=int(arch.embed_dim * arch.mlp_ratio),
        max_length=cfg.frames,
        num_mel_bins=cfg.mel,
        num_labels=2,
        layer_norm_eps=1e-6,
    )
    model = ASTForAudioClassification._from_config(hf_cfg, attn_implementation="sdpa").to(device).train()
    opt = make_optimizer(model, fused)

    def step(batch: dict, optimise: bool = True) -> None:
        loss = F.cross_entropy(model(batch["spec"]).logits, batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optimise:
            opt.step()

    return model, step


def time_interleaved(
    steps: dict[str, Callable[[dict], None]], batch: dict, device: torch.device, warmup: int, rounds: int
) -> dict[str, float]:
    """Median seconds per step of each model; models take turns every round so drift hits all alike, and the
    order rotates every round: on CPU the model that runs right after another one was measured 7-13 % slower
    (caches and allocator state), which a fixed order would charge to the same model every time."""
    for step in steps.values():
        for _ in range(warmup):
            step(batch)
    times: dict[str, list[float]] = {label: [] for label in steps}
    order = list(steps.items())
    for r in range(rounds):
        for label, step in order[r % len(order):] + order[: r % len(order)]:
            sync(device)
            t0 = time.perf_counter()
            step(batch)
            sync(device)
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) for label, t in times.items()}


def print_profile(step: Callable[[dict], None], batch: dict, device: torch.device, label: str) -> None:
    """Top operators of one step by self time (where a step spends what is not matmul)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step(batch)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"--- profile: {label}")
    print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=48))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "base"], choices=sorted(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=["ast", "ast_film_soft"])
    parser.add_argument("--layers", choices=("all", "paper"), default="all",
                        help="conditioned blocks: all (worst case) or the variant's own (SoftFiLM: 10-11)")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face reference")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) for every model")
    parser.add_argument(
        "--profile", action="store_true", help="print the top operators of one step per model"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = 1000 * matmul_peak_tflops(device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, fp32")
    print(f"fp32 matmul peak (2048^3 torch.mm on CPU, 8192^3 on CUDA, best of 10): {peak:.1f} GFLOP/s\n")
    header = (
        f"{'config':22} {'model':24} {'step s':>8} {'samples/s':>10} {'HF/ls':>6} {'GFLOP/step':>11} "
        f"{'GFLOP/s':>8} {'%peak':>6} {'kernels':>8}"
    )
    print(header)
    print("-" * len(header))
    for key in args.configs:
        cfg = CONFIGS[key]
        batch = make_batch(cfg, device)
        labels = ([] if args.no_hf else [HF_LABEL]) + [f"ls {v}" for v in args.variants]
        steps = {}
        for label in labels:
            if label == HF_LABEL:
                steps[label] = hf_step_fn(cfg, device, args.fused_adamw)[1]
            else:
                steps[label] = ls_step_fn(label[3:], cfg, device, args.fused_adamw, args.layers)[1]
        first_ls = next(step for label, step in steps.items() if label != HF_LABEL)
        print(f"{cfg.name}: attention kernel {', '.join(attention_backends(lambda: first_ls(batch)))}")  # noqa: B023
        seconds = time_interleaved(steps, batch, device, args.warmup, args.steps)
        hf_time = seconds.get(HF_LABEL, float("nan"))
        for label, step in steps.items():
            flops = flops_per_call(lambda: step(batch))  # noqa: B023 - called at once
            # forward + backward only: a CPU AdamW runs per-parameter ops, the CUDA one is fused
            kernels = kernels_per_call(lambda: step(batch, optimise=False))  # noqa: B023
            sec = seconds[label]
            gflops = flops / sec / 1e9
            print(
                f"{cfg.name:22} {label[:24]:24} {sec:8.3f} {cfg.batch / sec:10.2f} {hf_time / sec:6.2f} "
                f"{flops / 1e9:11.1f} {gflops:8.1f} {100 * gflops / peak:5.1f}% {kernels:8d}",
                flush=True,
            )
            if args.profile:
                print_profile(step, batch, device, label)
        for label in steps:
            if "ls ast" in seconds and label.startswith("ls ") and label != "ls ast":
                print(f"{'':22} {label} / ls ast step time: {seconds[label] / seconds['ls ast']:.3f}x")
        del steps
        print()


if __name__ == "__main__":
    main()
