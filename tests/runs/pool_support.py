"""What a pool's worker runs in the executor tests (a module of its own: spawned workers import it by name)."""

from __future__ import annotations

import os
import time

from ls.runs.executor import RunResult


def die_on_seed_1(job) -> RunResult:
    """The run of seed 1 kills its worker process as the kernel's out-of-memory killer would; the others
    finish (slowly enough that one is still running when it dies)."""
    if job.spec.seed == 1:
        os._exit(137)
    start = time.time()
    time.sleep(1.0)
    job.spec.run_dir.mkdir(parents=True, exist_ok=True)
    (job.spec.run_dir / "times").write_text(f"{start} {time.time()}")
    return RunResult(job.spec.key, True, 1.0, job.spec.run_dir, test={"icbhi_score": float(job.spec.seed)})
