"""benchmarks/gpu_check.sh without a GPU: it refuses in one line, plans its steps within 8 minutes, keeps to its
budget, reads what each step prints and assembles the table and the JSON (the steps themselves need CUDA)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load()

#: What benchmarks/epoch.py prints on a GPU (its format strings, with numbers filled in).
EPOCH_OUTPUT = """config: configs/ast_film_soft_config.yaml variant=ast_film_soft (random init)
model: base384, stride 10x10, input 128x1024 (mel bins x frames) -> 12x101 = 1212 patches
device=cuda (NVIDIA H100 80GB HBM3), torch threads=8, precision=bf16 (training.amp=bf16), tf32=True, compile=False, deterministic=True
attention (SDPA) kernel: flash; model FLOPs per sample: train 310.2 G, eval 103.4 G
train: 240 cycles in 0.5 s = 480.00 samples/s, 33.3 ms/step (full pass of 4142 cycles extrapolated: 0.1 min)
       148.896 TFLOP/s = 30.1 % of the fp32 peak, 21.3 % of the bf16 peak
       loader alone 900.0 samples/s with 15 worker(s) = 1.88x the pass's rate; the pass waited for data 2 % of its time; loader-bound: no
eval:  240 cycles in 0.2 s = 1200.00 samples/s, 13.3 ms/step (full pass of 2756 cycles extrapolated: 0.0 min)
       124.080 TFLOP/s = 25.1 % of the fp32 peak, 17.7 % of the bf16 peak
peak RSS: 5120 MiB
peak GPU memory: 20480 MiB
"""


def test_without_cuda_it_refuses_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the check would run")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    env = {**os.environ, "LS_VENV": str(venv),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--json", str(tmp_path / "g.json")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        (f"error: benchmarks/gpu_check.sh needs a CUDA device; torch {torch.__version__} sees none "
         "(torch.cuda.is_available() is False); nothing was run")]
    assert "machine: " in proc.stdout  # what it ran on, as scripts/test.sh says it
    assert not (tmp_path / "g.json").exists()


def test_the_plan_runs_everything_the_check_promises_within_eight_minutes(tmp_path, capsys):
    steps = gpu_check.plan(tmp_path)
    names = [s.name for s in steps]
    assert names[:2] == ["data", "cuda-tests"]
    for variant in ("ast", "ast_film_soft"):
        for label in ("bf16 eager", "bf16 compiled", "fp32"):
            assert f"epoch {variant} {label}" in names
    assert {"study", "torchrun nccl"} <= set(names) and names[-1].endswith("bf16 compiled")
    by_name = {s.name: s.command for s in steps}
    compiled, fp32 = by_name["epoch ast bf16 compiled"], by_name["epoch ast_film_soft fp32"]
    assert "--compile" in compiled and compiled[compiled.index("--amp") + 1] == "bf16"
    assert fp32[fp32.index("--amp") + 1] == "false" and "--compile" not in fp32
    assert str(REPO / "configs" / "ast_config.yaml") in compiled  # the paper config of each variant
    assert "-m" in by_name["cuda-tests"] and "cuda" in by_name["cuda-tests"]
    torchrun = next(s for s in steps if s.name == "torchrun nccl")
    assert "--nproc_per_node=1" in torchrun.command and "training.device=cuda" in torchrun.command
    assert torchrun.env == {"NCCL_DEBUG": "INFO"}
    assert gpu_check.BUDGET_S + 10 <= 8 * 60  # the steps' budget and the table fit in 8 minutes

    assert gpu_check.main(["--dry-run", "--work", str(tmp_path), "--only", "epoch ast fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (at most")[0] for line in lines] == ["data", "epoch ast fp32"]  # the data it needs
    assert gpu_check.main(["--dry-run", "--only", "epoch ast fp16"]) == 2
    assert capsys.readouterr().err.startswith("error: --only: unknown step(s) ['epoch ast fp16']")


def test_every_cuda_only_test_carries_the_marker_the_check_runs():
    """A test skipped without CUDA but not marked ``cuda`` would never run anywhere: gpu_check runs ``-m cuda``."""
    import ast

    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [ast.get_source_segment(source, d) or "" for d in node.decorator_list]
            if any("skipif" in d and "cuda.is_available" in d for d in decorators):
                found.append(node.name)
                assert "pytest.mark.cuda" in decorators, f"{path.name}::{node.name} lacks @pytest.mark.cuda"
    assert "test_no_training_step_synchronises_the_cuda_device" in found


def _fake_steps():
    return [gpu_check.Step("data", ["gen"], 60, "data"), gpu_check.Step("cuda-tests", ["pytest"], 60, "pytest"),
            gpu_check.Step("epoch ast bf16 eager", ["epoch"], 70, "epoch"),
            gpu_check.Step("torchrun nccl", ["torchrun"], 45, "torchrun"),
            gpu_check.Step("epoch ast bf16 compiled", ["epoch", "--compile"], 120, "epoch")]


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_steps_keep_within_the_budget_and_are_read(tmp_path):
    clock, limits = _Clock(), []
    outputs = {"data": (0, "wrote 160 recordings", 20.0), "pytest": (0, "2 passed in 9.1s", 9.0),
               "epoch": (0, EPOCH_OUTPUT, 40.0), "torchrun": (0, "NCCL INFO Bootstrap : Using eth0\n", 30.0)}

    def runner(step, limit):
        limits.append((step.name, limit))
        code, text, seconds = outputs[step.kind]
        clock.now += min(seconds, limit)
        return (None, text, limit) if seconds > limit else (code, text, seconds)

    out = gpu_check.run_steps(_fake_steps(), budget=150, runner=runner, clock=clock)
    # 20 + 9 + 40 + 30 = 99 s used: the compiled run gets the 51 s left, not its 120
    assert limits[-1] == ("epoch ast bf16 compiled", 51.0)
    assert [o.status for o in out] == ["ok", "ok", "ok", "ok", "ok"]
    eager = out[2].metrics
    assert eager["train_samples_per_s"] == 480.0 and eager["eval_samples_per_s"] == 1200.0
    assert eager["train_ms_per_step"] == 33.3 and eager["train_pct_bf16_peak"] == 21.3
    assert eager["peak_gpu_mib"] == 20480 and eager["attention"] == "flash" and eager["precision"] == "bf16"
    assert eager["device"] == "NVIDIA H100 80GB HBM3"
    assert out[1].metrics == {"tests": {"passed": 2}} and out[3].metrics == {"nccl": True}

    # a slower machine: the eager run is stopped at its 70 s, torchrun takes 40 s, and the compiled run, with
    # 150 - (20 + 9 + 70 + 40) = 11 s left, is skipped, not started
    clock.now, limits[:] = 0.0, []
    outputs["epoch"], outputs["torchrun"] = (0, EPOCH_OUTPUT, 105.0), (0, "", 40.0)
    out = gpu_check.run_steps(_fake_steps(), budget=150, runner=runner, clock=clock)
    assert out[2].status == "timeout" and [n for n, _ in limits] == [
        "data", "cuda-tests", "epoch ast bf16 eager", "torchrun nccl"]
    assert out[-1].status == "skipped (time budget)"

    # no data: nothing that reads it runs; no CUDA test collected (exit 5) is not a failure
    clock.now, limits[:] = 0.0, []
    outputs["data"], outputs["pytest"] = (1, "error: disk full", 1.0), (5, "no tests ran", 1.0)
    out = gpu_check.run_steps(_fake_steps(), budget=150, runner=runner, clock=clock)
    assert [o.status for o in out] == ["failed (exit 1)", "ok (no cuda tests collected)", "skipped (no data)",
                                       "skipped (no data)", "skipped (no data)"]
    assert out[0].tail == "error: disk full"


def test_the_check_prints_one_table_and_writes_it_as_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "cuda_device", lambda: ("NVIDIA H100 80GB HBM3", "2.9.1+cu128"))
    texts = {"data": "", "pytest": "2 passed in 9.1s", "epoch": EPOCH_OUTPUT, "study": "report written",
             "torchrun": "NCCL INFO ncclCommInitRank comm 0x1 rank 0 nranks 1"}
    monkeypatch.setattr(gpu_check, "run_subprocess", lambda step, limit: (0, texts[step.kind], 12.5))
    path = tmp_path / "out" / "gpu_check.json"
    assert gpu_check.main(["--json", str(path), "--work", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    table = out[out.index("step "):].splitlines()
    assert table[0].split() == ["step", "status", "s", "train/s", "eval/s", "ms/step", "%", "bf16", "pk", "GPU",
                                "MiB", "notes"]
    rows = {line.split("  ")[0].strip(): line for line in table[2:12]}
    assert len(rows) == 10 and all(" ok " in line for line in rows.values())
    assert "480.0" in rows["epoch ast fp32"] and "1200.0" in rows["epoch ast fp32"]
    assert "20480" in rows["epoch ast fp32"] and "attn flash" in rows["epoch ast fp32"]
    assert "nccl initialised" in rows["torchrun nccl"] and "2 passed" in rows["cuda-tests"]
    doc = json.loads(path.read_text())
    assert doc["device"] == "NVIDIA H100 80GB HBM3" and doc["budget_s"] == gpu_check.BUDGET_S
    assert [s["name"] for s in doc["steps"]] == [s.name for s in gpu_check.plan(tmp_path)]
    assert doc["steps"][2]["metrics"]["eval_samples_per_s"] == 1200.0 and doc["steps"][2]["command"]
    # a failed step: exit code 1, and the table says which
    monkeypatch.setattr(gpu_check, "run_subprocess",
                        lambda step, limit: (3 if step.kind == "study" else 0, texts[step.kind], 1.0))
    assert gpu_check.main(["--json", str(path), "--work", str(tmp_path / "work")]) == 1
    assert "failed (exit 3)" in capsys.readouterr().out


def test_a_step_past_its_limit_is_killed_with_its_workers(tmp_path):
    """A step that starts workers (torchrun, the study) and runs out of time: the whole process group goes, and
    the check goes on (no wait for a grandchild that holds the output pipe)."""
    script = tmp_path / "slow.py"
    script.write_text("import subprocess, sys, time\n"
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      "print('started', flush=True)\ntime.sleep(60)\n")
    step = gpu_check.Step("slow", [sys.executable, str(script)], 2, "study")
    code, text, seconds = gpu_check.run_subprocess(step, 2)
    assert code is None and "started" in text and seconds < 30
