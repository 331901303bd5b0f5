"""What a run or a test session ran on: the CPU, the vector code torch dispatches to, versions and threads.

    python -m ls.utils.machine      # one line per fact (scripts/test.sh prints it before the tests)
    ausc machine                    # the same where ls is installed: paste it into a bug report

Seeded numbers are bit-identical only on the same CPU code path with the same build of torch (and the same
thread count); a report that carries these facts says which numbers can be compared with which.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions decide the numbers (or the tests' behaviour).
PACKAGES = ("torch", "torchaudio", "timm", "numpy", "mlflow")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    """The facts, as a dict (JSON-ready)."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
        "python": platform.python_version(),
        # what torch's own vectorised kernels use: DEFAULT, AVX2, AVX512 (x86), or the ARM/other names
        "capability": torch.backends.cpu.get_cpu_capability(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY") or None,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    info.update({name: _version(name) for name in PACKAGES})
    info["torch"] = torch.__version__  # with its build tag (+cpu, +cu128)
    return info


def report(info: dict[str, Any] | None = None) -> str:
    """:func:`describe` as a few readable lines."""
    i = describe() if info is None else info
    forced = f" (ATEN_CPU_CAPABILITY={i['aten_cpu_capability']})" if i.get("aten_cpu_capability") else ""
    versions = ", ".join(f"{name} {i.get(name) or '-'}" for name in PACKAGES)
    lines = [f"machine: {i['cpu']}, {i['cpus']} CPUs ({i['system']} {i['machine']}), Python {i['python']}",
             f"torch CPU capability: {i['capability']}{forced}; torch threads: {i['threads']}"
             + (f"; CUDA: {i['cuda']}" if i.get("cuda") else ""),
             f"versions: {versions}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ls.utils.cli import add_common_options, run_command

    parser = argparse.ArgumentParser(prog="python -m ls.utils.machine", description=__doc__.splitlines()[0])
    add_common_options(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: print(report(), flush=True) or 0, args)


if __name__ == "__main__":
    raise SystemExit(main())
