#!/usr/bin/env bash
# Everything that needs a CUDA device, in one command of at most 8 minutes (after scripts/setup_env.sh has
# installed the environment): the CUDA-only tests, benchmarks/epoch.py at the paper config (bf16 eager, bf16
# compiled, fp32) for the AST baseline and SoftFiLM with the evaluation rate, a 1-GPU study and a 1-rank nccl
# torchrun. Prints one table and writes it as JSON (runs/gpu_check.json). Without CUDA it stops with one
# error line. Options: benchmarks/gpu_check.py (--budget, --json, --only, --dry-run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${LS_VENV:-$root/.venv}/bin/python"
[ -x "$py" ] || bash "$root/scripts/setup_env.sh"
cd "$root"
"$py" -m ls.utils.machine
# the steps keep within --budget (470 s by default); this is the backstop for the whole command
exec timeout --kill-after=5 480 "$py" "$root/benchmarks/gpu_check.py" "$@"
