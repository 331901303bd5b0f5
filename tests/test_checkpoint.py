"""Checkpoint I/O: RNG round trip, weights_only reading, clear errors, resuming across formats, and rebuilding a
trained model from its checkpoint (``ls.inference``)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ls.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_resume_state,
    cpu_state_dict,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def trained_run(synthetic_icbhi_dir, tmp_path_factory):
    """One tiny SoftFiLM run (2 epochs, quickstart config) on the synthetic folder, without tracking."""
    from ls.config import load_config
    from ls.runs.run import train_run

    ck = tmp_path_factory.mktemp("trained_run")
    cfg = load_config(CONFIGS / "quickstart.yaml", [
        f"dataset.data_folder={synthetic_icbhi_dir}", "training.epochs=2", f"training.checkpoint_dir={ck}",
    ])  # fmt: skip
    return train_run(cfg, "ast_film_soft", progress=False), cfg


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    state = capture_rng_state()
    expected = (random.random(), np.random.normal(), torch.rand(3))
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    restore_rng_state(torch.load(path, weights_only=True))
    got = (random.random(), np.random.normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_cpu_state_dict_is_a_copy_not_an_alias():
    model = torch.nn.Linear(2, 2)
    snap = cpu_state_dict(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(snap["weight"], model.weight)


def _minimal(**extra):
    state = {"format": 2, "version": "0", "variant": "ast", "config": {}, "model": {}, "metadata_encoder": None,
             "metadata_spec": None, "class_names": [], "thresholds": [0.5, 0.5]}  # fmt: skip
    state.update(extra)
    return state


def test_save_is_atomic_and_read_validates(tmp_path):
    path = save_checkpoint(_minimal(), tmp_path / "a" / "best.pt")
    assert read_checkpoint(path)["thresholds"] == [0.5, 0.5]
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left behind
    with pytest.raises(CheckpointError, match="lacks key"):
        save_checkpoint({"model": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pt")
    torch.save({"model_state_dict": {}}, tmp_path / "original.pt")
    with pytest.raises(CheckpointError, match="original scripts"):
        read_checkpoint(tmp_path / "original.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_checkpoint(tmp_path / "garbage.pt")
    torch.save(_minimal(format=99, version="9.0"), tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"format 99 \(written by ls 9.0\).*use the ls version that wrote it"):
        read_checkpoint(tmp_path / "future.pt")


def test_a_format_1_last_pt_cannot_resume_and_says_what_to_do(tmp_path):
    state = _minimal(format=1, version="0.1.0", optimizer={}, epoch=3)
    with pytest.raises(CheckpointError, match=r"format 1 \(ls 0.1.0\).*start a new run.*best.pt still loads"):
        check_resume_state(state, "ast", tmp_path / "last.pt")


@pytest.mark.slow
def test_a_checkpoint_rebuilds_the_trained_model(trained_run):
    """The rebuilt model gives exactly the logits the trainer saw on the test split."""
    from ls.data import build_datasets
    from ls.inference import load_for_inference

    outcome, cfg = trained_run
    best = outcome.run_dir / "best.pt"
    loaded = load_for_inference(best, device="cpu")
    assert loaded.variant == "ast_film_soft" and loaded.mode.kind == "multilabel"
    assert loaded.class_names == ["Normal", "Crackle", "Wheeze", "Both"]
    assert tuple(loaded.thresholds) == tuple(outcome.fit.thresholds)
    assert loaded.encoder is not None and loaded.metadata_spec.cont_dim == 3
    assert loaded.encoder.feature_stats is not None  # quickstart uses mel_norm: dataset
    assert loaded.cfg.training.epochs == cfg.training.epochs
    assert read_checkpoint(best)["format"] == 2

    test = build_datasets(cfg).test
    batch = torch.utils.data.default_collate([test[i] for i in range(4)])
    with torch.no_grad():
        logits = loaded.model(batch["spec"], batch["meta"]).numpy()
    out = outcome.fit.test.outputs
    for i in range(4):
        j = np.flatnonzero((out.filename == batch["filename"][i]) & (out.cycle_index == int(batch["cycle_index"][i])))
        np.testing.assert_allclose(out.logits[j[0]], logits[i], rtol=1e-5, atol=1e-6)


def test_a_text_file_or_a_malicious_pickle_is_named_for_what_it_is(tmp_path):
    """Not 'cannot read checkpoint ...: 101', and never PyTorch's advice to load with weights_only=False."""
    import os

    (tmp_path / "notes.pt").write_text("epoch 1: loss 0.5\n")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "notes.pt")
    assert str(info.value) == f"{tmp_path / 'notes.pt'} is not a checkpoint: it is a text file, expected a " \
                              "best.pt or last.pt written by ls"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({**_minimal(), "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "evil.pt")
    msg = str(info.value)
    assert "evil.pt" in msg and "arbitrary code" in msg and "weights_only" not in msg and "False" not in msg
