"""Behaviour of main at a7d3a1d, recorded before the redesign, that later code must keep.

The fixtures in ``tests/fixtures/main_a7d3a1d/`` were written by a7d3a1d's own code:

- ``models.json``: for 9 model configurations (the five variants and four option combinations), the name,
  shape and a SHA-256 prefix of every state-dict tensor after ``torch.manual_seed(7)``, and the logits on the
  inputs in ``input.pt``;
- ``checkpoints.json`` / ``training.json``: every variant trained 2 epochs on a 40-recording synthetic folder
  (``generate_icbhi(recordings=40, seed=3)``, ``configs/quickstart.yaml`` with small overrides): the final test
  metrics, and the ``best.pt`` written then, without its tensors (format 1). ``checkpoints.json`` holds the
  hashes and logits of a seeded model of each checkpoint's config, so a format-1 file can be rebuilt here
  byte-for-byte with those weights and loaded by today's code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "main_a7d3a1d"
VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")


def _json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


def _params(model: torch.nn.Module) -> list[list]:
    return [[k, list(v.shape), _sha(v)] for k, v in model.state_dict().items()]


def _build_from_old_block(variant: str, block: dict):
    """The model a7d3a1d built from its ``models.<variant>`` block, with today's factory (the block goes
    through the format-1 upgrade, as a checkpoint's config does)."""
    from ls.config import config_from_dict
    from ls.config.upgrade import upgrade_config_v1
    from ls.data.icbhi import full_metadata_spec
    from ls.models import build_model

    upgraded, _ = upgrade_config_v1({"models": {variant: block}, "training": {}})
    raw = {"dataset": {"data_folder": ".", "w": block["input_tdim"]}, "audio": {"n_mels": block["input_fdim"]},
           "models": upgraded["models"]}
    cfg = config_from_dict(raw, "a7d3a1d model block")
    torch.manual_seed(7)
    return build_model(cfg.model(variant), full_metadata_spec()).eval()


@pytest.mark.parametrize("case", sorted(_json("models.json")))
def test_same_parameter_names_values_and_logits_as_main(case):
    entry = _json("models.json")[case]
    model = _build_from_old_block(entry["variant"], entry["model_config"])
    assert _params(model) == entry["params"]
    inp = torch.load(FIXTURES / "input.pt")
    with torch.no_grad():
        logits = model(inp["spec"], inp["meta"])
    torch.testing.assert_close(logits.double(), torch.tensor(entry["logits"], dtype=torch.float64),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_format_1_checkpoint_of_main_loads_and_predicts_the_same(variant, tmp_path):
    from ls.config import config_from_dict
    from ls.config.upgrade import upgrade_config_v1
    from ls.inference import load_for_inference
    from ls.models import build_model
    from ls.types import MetadataSpec

    skeleton = _json("training.json")[variant]["best_skeleton"]
    expected = _json("checkpoints.json")[variant]
    cfg = config_from_dict(upgrade_config_v1(skeleton["config"])[0], "a7d3a1d checkpoint config")
    torch.manual_seed(7)
    model = build_model(cfg.model(variant), MetadataSpec.from_dict(skeleton["metadata_spec"]))
    assert _params(model) == expected["params"]
    path = tmp_path / "best.pt"
    torch.save({**skeleton, "model": model.state_dict()}, path)  # a format-1 file, as a7d3a1d wrote it

    loaded = load_for_inference(path, device="cpu")
    inp = torch.load(FIXTURES / "input.pt")
    meta = {k: torch.tensor(v) for k, v in expected["meta"].items()}
    with torch.no_grad():
        logits = loaded.model(inp["spec"], meta)
    torch.testing.assert_close(logits.double(), torch.tensor(expected["logits"], dtype=torch.float64),
                               rtol=0, atol=1e-6)
    one = loaded.encoder.encode_one(device="Meditron", site="Tc", duration=[1.5, 2.25], child_weight=20.0,
                                    child_height=110.0)
    for key, value in expected["encode_one"].items():
        torch.testing.assert_close(one[key].double(), torch.tensor(value, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def regression_data(tmp_path_factory) -> Path:
    from ls.data.synthetic import generate_icbhi

    out = tmp_path_factory.mktemp("regression_icbhi")
    generate_icbhi(out, recordings=40, seed=3)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_two_epochs_of_training_give_mains_test_metrics(variant, regression_data, tmp_path):
    from ls.config import config_from_dict
    from ls.config.upgrade import upgrade_config_v1
    from ls.runs.run import train_run

    recorded = _json("training.json")[variant]
    raw, _ = upgrade_config_v1(recorded["best_skeleton"]["config"])
    raw["dataset"] = {**raw["dataset"], "data_folder": str(regression_data)}
    raw["training"] = {**raw["training"], "checkpoint_dir": str(tmp_path)}
    cfg = config_from_dict(raw, "a7d3a1d training config")
    outcome = train_run(cfg, variant, progress=False)
    assert outcome.best_epoch == recorded["best_epoch"]
    for key, value in recorded["test"].items():
        assert outcome.test_metrics[key] == pytest.approx(value, abs=1e-9), key
