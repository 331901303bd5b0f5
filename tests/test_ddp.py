"""DDP: 2 CPU processes (torchrun, gloo) train to the same metrics as one process with the same global batch.

With no dropout and no augmentation, DistributedSampler(shuffle=False) gives rank r the items r, r+2, ...;
two ranks with batch 4 then see exactly the 8 items of the single process's batch, and DDP's gradient
average equals the single process's batch-mean gradient. Evaluation outputs are gathered across ranks
(padding duplicates removed), so the metrics must agree up to float reduction order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

TESTS = Path(__file__).resolve().parent
WORKER = r'''
import json, sys, torch
from types import SimpleNamespace
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
sys.path.insert(0, sys.argv[1])
from test_trainer import CycleSet, TinyModel, make_cfg, trainer_for
from ls.engine.distributed import init_distributed, cleanup_distributed
from pathlib import Path
torch.set_num_threads(1)
ctx = init_distributed("cpu")
out = Path(sys.argv[2])
def loader(ds, bs, drop):
    return DataLoader(ds, batch_size=bs, sampler=DistributedSampler(ds, 2, ctx.rank, shuffle=False), drop_last=drop)
loaders = SimpleNamespace(train=loader(CycleSet(48, 0, "tr_clean"), 4, True), val=loader(CycleSet(23, 1, "va"), 5, False),
                          test=loader(CycleSet(21, 2, "te"), 5, False))
torch.manual_seed(0)
trainer = trainer_for(TinyModel(dropout=0.0), loaders, make_cfg(out, epochs=3), run_dir=out / "ddp", ctx=ctx,
                      progress=False)
res = trainer.fit()
if ctx.is_main:
    (out / "ddp.json").write_text(json.dumps({"test": res.test.metrics, "best_epoch": res.best_epoch,
        "logits": res.test.outputs.logits.tolist(), "n": len(res.test.outputs.logits),
        "loss": res.test.loss}))
cleanup_distributed(wait_for_peers=True)
'''


@pytest.mark.slow
def test_two_cpu_processes_match_one_process(tmp_path):
    sys.path.insert(0, str(TESTS))
    from test_trainer import CycleSet, TinyModel, make_cfg, trainer_for

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(TESTS), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    # only rank 0 wrote checkpoints, once
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "last.pt"]

    torch.set_num_threads(1)
    loaders = type("L", (), {})()
    loaders.train = DataLoader(CycleSet(48, 0, "tr_clean"), batch_size=8, shuffle=False, drop_last=True)
    loaders.val = DataLoader(CycleSet(23, 1, "va"), batch_size=5)
    loaders.test = DataLoader(CycleSet(21, 2, "te"), batch_size=5)
    torch.manual_seed(0)
    single = trainer_for(TinyModel(dropout=0.0), loaders, make_cfg(tmp_path, epochs=3), run_dir=tmp_path / "single",
                         progress=False).fit()
    assert ddp["n"] == 21  # the padded duplicate cycles were dropped after gathering
    assert ddp["best_epoch"] == single.best_epoch
    torch.testing.assert_close(torch.tensor(ddp["logits"], dtype=torch.float32), torch.from_numpy(single.test.outputs.logits),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    for key in ("specificity", "sensitivity", "icbhi_score"):
        assert ddp["test"][key] == pytest.approx(single.test.metrics[key], abs=1e-6)
    assert ddp["loss"] == pytest.approx(single.test.loss, abs=1e-5)  # the padded duplicate is not counted


@pytest.mark.slow
def test_a_root_script_under_torchrun_trains_sprsound_on_two_ranks(tmp_path):
    """``torchrun --nproc_per_node=2 ast_film_soft.py`` on a synthetic SPRSound folder: both ranks build the
    same feature cache at once, rank 0 alone writes one run folder and says each data warning once, the ranks
    leave together (exit 0), and DDP has no gradient-layout complaint about the backbone's tokens."""
    import yaml

    from ls.data.synthetic_sprsound import generate_sprsound

    data = generate_sprsound(tmp_path / "BioCAS2022", recordings=24, seed=0)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 0,
        "dataset": {"name": "sprsound", "task": "event7", "data_folder": str(data), "batch_size": 4, "w": 64,
                    "val_fraction": 0.25, "cache_workers": 0, "cache_dir": str(tmp_path / "cache")},
        "audio": {"mel_norm": "dataset"},
        "models": {"ast_film_soft": {"model_size": "tiny224", "fstride": 16, "tstride": 16}},
        "training": {"epochs": 2, "device": "cpu", "checkpoint_dir": str(tmp_path / "ck")},
    }))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(TESTS.parent / "ast_film_soft.py"), "--config", str(config), "--no-tracking"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = (tmp_path / "ck").iterdir()
    assert {"best.pt", "last.pt", "run.json", "test_predictions.csv"} <= {p.name for p in run_dir.iterdir()}
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["epochs"] == 2 and summary["factors"] == ["site", "sex"]
    assert proc.stdout.count("checkpoints: ") == 1 and proc.stdout.count("epoch   2/2") == 1
    said = [line for line in proc.stderr.splitlines() if "validation split" in line or "official split" in line]
    assert said and len(said) == len(set(said)), said  # each data warning once, from rank 0
    assert "Grad strides do not match" not in proc.stderr
