#!/usr/bin/env bash
# The README's main job: set up .venv (scripts/setup_env.sh), then train SoftFiLM and the AST baseline on
# synthetic ICBHI-format data and print both test results side by side. Extra arguments go to ls.quickstart.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${LS_VENV:-$root/.venv}/bin/python" -m ls.quickstart "$@"
