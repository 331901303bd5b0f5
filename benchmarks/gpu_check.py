"""The GPU check: everything that needs a CUDA device, in one command of at most 8 minutes (benchmarks/gpu_check.sh).

    bash benchmarks/gpu_check.sh [--budget 470] [--json runs/gpu_check.json] [--only STEP ...] [--dry-run]

Steps, in this order (each with its own time limit, all within ``--budget`` seconds; a step that no longer fits
is reported as skipped, never run past the budget):

1. ``data``: a synthetic ICBHI-format folder (``ls.data.synthetic``, 160 recordings);
2. ``cuda-tests``: the tests marked ``cuda`` (``pytest -m cuda``), which are skipped on a machine without GPU;
3. ``epoch``: ``benchmarks/epoch.py`` at the paper config (base384, stride 10, 128 x 1024, batch 16, the
   paper's augmentations, random init) for the AST baseline (``ast``) and SoftFiLM (``ast_film_soft``): bf16
   eager and fp32 (TF32 matmuls, the config's default); training and evaluation rates from the first
   :data:`EPOCH_BATCHES` batches of each pass (evaluation = the test split, forward only);
4. ``study``: ``python -m ls.study configs/quickstart_study.yaml`` on the GPU (both variants, one seed, one
   epoch, ``--jobs 1``);
5. ``torchrun``: ``torchrun --nproc_per_node=1 ast_film_soft.py`` with ``training.device=cuda`` (the nccl
   process group; ``NCCL_DEBUG=INFO`` shows that nccl initialised), one epoch of the quickstart config;
6. ``epoch`` bf16 compiled (``torch.compile``; the compilation happens in the untimed warm-up batches), last:
   it gets what is left of the budget.

It prints one table (step, status, seconds, training and evaluation samples/s, ms per training step, share of
the bf16 matmul peak, peak GPU memory, notes) and writes it with every command and its output's tail as JSON.
Without a CUDA device it stops at once with one ``error:`` line (exit code 2); ``--dry-run`` prints the plan.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The whole check's limit (8 minutes) less what the table and the JSON need.
BUDGET_S = 470
#: A step is not started with less time than this left (it could not do anything useful).
MIN_STEP_S = 15
#: Timed batches per pass (15 x 16 = 240: full evaluation batches only, so a compiled model sees one shape)
#: and untimed warm-up batches (CUDA initialisation; with --compile, the compilation).
EPOCH_BATCHES, EPOCH_WARMUP = 15, 2
DATA_RECORDINGS = 160
VARIANTS = ("ast", "ast_film_soft")
#: (label, epoch.py options): the paper config's three precisions.
PRECISIONS = (("bf16 eager", ["--amp", "bf16"]), ("bf16 compiled", ["--amp", "bf16", "--compile"]),
              ("fp32", ["--amp", "false"]))


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: float
    kind: str  # data | pytest | epoch | study | torchrun
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    name: str
    status: str  # ok | failed (exit N) | timeout | skipped (...)
    seconds: float
    metrics: dict[str, Any]
    command: str
    tail: str = ""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps (default %(default)s)")
    p.add_argument("--json", type=Path, default=Path("runs/gpu_check.json"), help="where the table goes as JSON")
    p.add_argument("--work", type=Path, default=None, help="data, caches and runs here (default: a temp folder)")
    p.add_argument("--only", nargs="+", default=None, metavar="STEP",
                   help="run only these steps (names as in the table, e.g. 'epoch ast bf16 eager'; 'data' is "
                        "added when a step needs it)")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their commands, run nothing")
    args = p.parse_args(argv)
    if args.budget < MIN_STEP_S:
        p.error(f"--budget must be at least {MIN_STEP_S} seconds, got {args.budget:g}")
    return args


def plan(work: Path, python: str = sys.executable) -> list[Step]:
    """Every step with its command and time limit."""
    data, cache = work / "data", work / "cache"
    steps = [
        Step("data", [python, "-m", "ls.data.synthetic", str(data), "--recordings", str(DATA_RECORDINGS),
                      "--seed", "0", "--workers", "8"], 60, "data"),
        Step("cuda-tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                            str(REPO / "tests")], 60, "pytest"),
    ]
    quick = ["--set", "training.device=cuda", "--set", "training.epochs=1", "--set", f"dataset.data_folder={data}",
             "--set", f"dataset.cache_dir={cache}"]
    epochs = {label: [Step(
        f"epoch {variant} {label}",
        [python, str(REPO / "benchmarks" / "epoch.py"), "--data", str(data), "--config",
         str(REPO / "configs" / f"{variant}_config.yaml"), "--variant", variant, "--device", "cuda", *options,
         "--max-batches", str(EPOCH_BATCHES), "--warmup", str(EPOCH_WARMUP), "--set", f"dataset.cache_dir={cache}"],
        120 if "--compile" in options else 70, "epoch") for variant in VARIANTS] for label, options in PRECISIONS}
    # the compiled runs last: their compilation is the least predictable part, and what is left of the budget
    # goes to them rather than cutting the study or torchrun short
    steps += epochs["bf16 eager"] + epochs["fp32"]
    steps.append(Step("study", [python, "-m", "ls.study", str(REPO / "configs" / "quickstart_study.yaml"),
                                "--seeds", "0", "--jobs", "1", "--no-tracking", "--out", str(work / "study"), *quick],
                      60, "study"))
    steps.append(Step("torchrun nccl", [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                        str(REPO / "ast_film_soft.py"), "--config",
                                        str(REPO / "configs" / "quickstart.yaml"), "--no-tracking",
                                        "--set", f"training.checkpoint_dir={work / 'torchrun'}", *quick],
                      45, "torchrun", env={"NCCL_DEBUG": "INFO"}))
    steps += epochs["bf16 compiled"]
    return steps


def select(steps: list[Step], only: Sequence[str] | None) -> list[Step]:
    """The steps named in ``only`` (all when None), with ``data`` first whenever a step reads the data."""
    if not only:
        return steps
    names = {s.name for s in steps}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; the steps are: {', '.join(s.name for s in steps)}")
    wanted = set(only)
    if any(s.kind in ("epoch", "study", "torchrun") for s in steps if s.name in wanted):
        wanted.add("data")
    return [s for s in steps if s.name in wanted]


# -- reading what a step printed -----------------------------------------------------------------------------------
_PASS = re.compile(r"^(train|eval):\s+(\d+) cycles in ([\d.]+) s = ([\d.]+) samples/s, ([\d.]+) ms/step", re.MULTILINE)
_PEAK = re.compile(r"([\d.]+) % of the fp32 peak, ([\d.]+) % of the bf16 peak")


def parse_epoch(text: str) -> dict[str, Any]:
    """The numbers of one ``benchmarks/epoch.py`` output."""
    out: dict[str, Any] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _PASS.match(line)
        if not m:
            continue
        name = m.group(1)
        out[f"{name}_samples_per_s"] = float(m.group(4))
        out[f"{name}_ms_per_step"] = float(m.group(5))
        if i + 1 < len(lines) and (peak := _PEAK.search(lines[i + 1])):
            out[f"{name}_pct_fp32_peak"], out[f"{name}_pct_bf16_peak"] = float(peak.group(1)), float(peak.group(2))
    if m := re.search(r"peak GPU memory: (\d+) MiB", text):
        out["peak_gpu_mib"] = int(m.group(1))
    if m := re.search(r"attention \(SDPA\) kernel: ([^;]+);", text):
        out["attention"] = m.group(1).strip()
    if m := re.search(r"precision=(\w+)", text):
        out["precision"] = m.group(1)
    if m := re.search(r"device=cuda \(([^)]*)\)", text):
        out["device"] = m.group(1)
    return out


def parse_pytest(text: str) -> dict[str, Any]:
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", text)}
    return {"tests": counts} if counts else {}


def parse_step(kind: str, text: str) -> dict[str, Any]:
    if kind == "epoch":
        return parse_epoch(text)
    if kind == "pytest":
        return parse_pytest(text)
    if kind == "torchrun":
        return {"nccl": "NCCL INFO" in text}
    return {}


# -- running ------------------------------------------------------------------------------------------------------
Runner = Callable[[Step, float], tuple[int | None, str, float]]


def run_subprocess(step: Step, timeout: float) -> tuple[int | None, str, float]:
    """Run one step in a process group of its own; exit code (None: it ran out of time and the whole group,
    workers included, was killed), its output (stdout and stderr), seconds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **step.env,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.Popen(step.command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's and the study's workers too: they hold the pipe open
        out, _ = proc.communicate()
        return None, out, time.perf_counter() - t0


def run_steps(steps: list[Step], budget: float, runner: Runner | None = None,
              clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """Run ``steps`` in order, each within ``min(its limit, what is left of budget)``; a step after a failed
    ``data`` step, or with less than :data:`MIN_STEP_S` left, is skipped."""
    runner = runner or run_subprocess
    start, outcomes, data_ok = clock(), [], True
    for step in steps:
        left = budget - (clock() - start)
        command = shlex.join(step.command)
        if step.kind in ("epoch", "study", "torchrun") and not data_ok:
            outcomes.append(Outcome(step.name, "skipped (no data)", 0.0, {}, command))
            continue
        if left < MIN_STEP_S:
            outcomes.append(Outcome(step.name, "skipped (time budget)", 0.0, {}, command))
            continue
        limit = min(step.timeout_s, left)
        code, text, seconds = runner(step, limit)
        status = "ok" if code == 0 else ("timeout" if code is None else f"failed (exit {code})")
        if step.kind == "pytest" and code == 5:
            status = "ok (no cuda tests collected)"
        if step.kind == "data" and code != 0:
            data_ok = False
        outcomes.append(Outcome(step.name, status, round(seconds, 1), parse_step(step.kind, text), command,
                                "\n".join(text.splitlines()[-15:])))
    return outcomes


def _cell(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_table(outcomes: list[Outcome]) -> str:
    """One line per step."""
    head = ("step", "status", "s", "train/s", "eval/s", "ms/step", "% bf16 pk", "GPU MiB", "notes")
    rows = []
    for o in outcomes:
        m = o.metrics
        notes = []
        if "attention" in m:
            notes.append(f"attn {m['attention']}")
        if "tests" in m:
            notes.append(", ".join(f"{n} {k}" for k, n in m["tests"].items()))
        if "nccl" in m:
            notes.append("nccl initialised" if m["nccl"] else "no NCCL INFO line")
        rows.append((o.name, o.status, _cell(o.seconds), _cell(m.get("train_samples_per_s")),
                     _cell(m.get("eval_samples_per_s")), _cell(m.get("train_ms_per_step")),
                     _cell(m.get("train_pct_bf16_peak")), _cell(m.get("peak_gpu_mib"), "{}"), "; ".join(notes)))
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    lines = []
    for r in (head, *rows):
        cells = [str(c).ljust(w) if i in (0, 1, 8) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(outcomes: list[Outcome], device: str, torch_version: str, budget: float, total_s: float) -> dict[str, Any]:
    """The JSON document: the machine, the budget, every step."""
    return {"device": device, "torch": torch_version, "budget_s": budget, "total_s": round(total_s, 1),
            "steps": [asdict(o) for o in outcomes]}


def cuda_device() -> tuple[str | None, str]:
    """The name of CUDA device 0 (None without one) and torch's version."""
    import torch

    return (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None), torch.__version__


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = tempfile.TemporaryDirectory(prefix="ls-gpu-check-") if args.work is None else None
    work = Path(work_dir.name) if work_dir else args.work
    try:
        try:
            steps = select(plan(work), args.only)
        except ValueError as exc:
            print(f"error: --only: {exc}", file=sys.stderr)
            return 2
        if args.dry_run:
            for s in steps:
                print(f"{s.name} (at most {s.timeout_s:g} s): {shlex.join(s.command)}")
            return 0
        device, version = cuda_device()
        if device is None:
            print(f"error: benchmarks/gpu_check.sh needs a CUDA device; torch {version} sees none "
                  "(torch.cuda.is_available() is False); nothing was run", file=sys.stderr)
            return 2
        print(f"[gpu_check] {device}, torch {version}; {len(steps)} steps within {args.budget:g} s", flush=True)
        t0 = time.perf_counter()
        outcomes = run_steps(steps, args.budget)
        total = time.perf_counter() - t0
        print(format_table(outcomes))
        doc = report(outcomes, device, version, args.budget, total)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, args.json)
        print(f"[gpu_check] {total:.0f} s; the table as JSON: {args.json}")
        return 0 if all(o.status.startswith("ok") for o in outcomes) else 1
    finally:
        if work_dir is not None:
            work_dir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
