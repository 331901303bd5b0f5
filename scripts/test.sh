#!/usr/bin/env bash
# Set up the environment if needed, say what the tests run on (CPU, the vector code torch dispatches to,
# versions, threads), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
py="${LS_VENV:-$root/.venv}/bin/python"
"$py" -m ls.utils.machine || echo "[test] (could not describe the machine)"
# One worker process per core, at most 4 (LS_TEST_WORKERS overrides; 1: in this process): most tests use one
# core, and several start processes of their own. Tests of the installed wheel share one worker (one build).
cores="$("$py" -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)')"
workers="${LS_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
if [ "$workers" -gt 1 ]; then
    echo "[test] $workers worker processes (LS_TEST_WORKERS=1: one)"
    exec "$py" -m pytest -q -n "$workers" --dist loadgroup "$@"
fi
exec "$py" -m pytest -q "$@"
