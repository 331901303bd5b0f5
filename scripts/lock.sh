#!/usr/bin/env bash
# Regenerate requirements.lock, the exact versions scripts/setup_env.sh installs: every runtime and dev
# dependency of pyproject.toml (all extras), resolved for Linux x86_64 / CPython 3.11 (manylinux_2_28), with
# torch/torchaudio held at the pair in constraints.txt. Pins already in the lock are kept unless asked:
#
#   bash scripts/lock.sh                            # after a dependency or an extra was added to pyproject.toml
#   bash scripts/lock.sh --upgrade-package mlflow   # move one package (and what it needs) to its newest release
#   bash scripts/lock.sh --upgrade                  # move everything within pyproject.toml's ranges
#
# Uses uv (a dev dependency: .venv/bin/uv after scripts/setup_env.sh; or UV=/path/to/uv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
uv="${UV:-}"
venv_uv="${LS_VENV:-$root/.venv}/bin/uv"
if [ -z "$uv" ]; then
    if [ -x "$venv_uv" ]; then uv="$venv_uv"; else uv="$(command -v uv || true)"; fi
fi
if [ -z "$uv" ]; then
    echo "error: uv not found: run bash scripts/setup_env.sh first (it installs uv into .venv), or set UV" >&2
    exit 2
fi
cd "$root"
exec "$uv" pip compile pyproject.toml --all-extras --constraint constraints.txt \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-emit-package ls --custom-compile-command "bash scripts/lock.sh" \
    --output-file requirements.lock --quiet "$@"
