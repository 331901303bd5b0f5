"""A fifth conditioning mechanism, defined here and nowhere under ``ls/``: one class, one options dataclass,
one table entry and a YAML block. It trains through the entry point the root scripts use, is evaluated with
``ls.evaluate`` and reloads from its checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ls.models import Conditioning, MetadataOptions, Variant, register_variant, unregister_variant
from ls.models.conditioning import metadata_features
from ls.utils.fields import option


@dataclass
class GainOptions(MetadataOptions):
    gain_hidden_dim: int = option(16, "hidden width of the gain network")


class MetadataGain(Conditioning):
    """Scales the pooled embedding channel-wise: ``h <- h * (1 + tanh(W2 relu(W1 m)))``."""

    exported_methods = ("gain_norm",)

    def __init__(self, features: nn.Module, embed_dim: int, hidden: int) -> None:
        super().__init__((), requires_metadata=True)
        self.features = features
        self.gain = nn.Sequential(nn.Linear(features.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))

    @classmethod
    def from_config(cls, cfg: GainOptions, spec, embed_dim: int, depth: int) -> Conditioning:
        return cls(metadata_features(cfg, spec, "layernorm"), embed_dim, cfg.gain_hidden_dim)

    def prepare(self, meta) -> dict[str, Any]:
        return {"gain": 1.0 + torch.tanh(self.gain(self.features(meta)))}

    def fuse(self, pooled: Tensor, state: dict[str, Any]) -> Tensor:
        return pooled * state["gain"]

    def epoch_stats(self) -> dict[str, float]:
        return {"gain/weight_norm": self.gain_norm()}

    def gain_norm(self) -> float:
        return float(self.gain[2].weight.detach().norm())


CONFIG = """
dataset:
  data_folder: {data}
  batch_size: 8
  cache_workers: 0
  w: 64
audio:
  n_mels: 32
  desired_length: 2.0
models:
  metadata_gain:
    model_size: tiny224
    fstride: 16
    tstride: 16
    gain_hidden_dim: 8
training:
  epochs: 1
  device: cpu
  checkpoint_dir: {out}/checkpoints
"""


@pytest.fixture
def registered():
    variant = register_variant(Variant("metadata_gain", "Gain-AST", GainOptions, MetadataGain))
    try:
        yield variant
    finally:
        unregister_variant("metadata_gain")


@pytest.mark.slow
def test_a_mechanism_defined_outside_ls_trains_evaluates_and_reloads(registered, synthetic_icbhi_dir, tmp_path,
                                                                      capsys):
    from ls.engine.checkpoint import read_checkpoint
    from ls.evaluate import main as evaluate
    from ls.inference import build_split_loader, load_for_inference, run_inference
    from ls.train import main

    config = tmp_path / "gain.yaml"
    config.write_text(CONFIG.format(data=synthetic_icbhi_dir, out=tmp_path))
    # the same entry point as ast_film_soft.py: sys.exit(main("<variant>"))
    assert main("metadata_gain", ["--config", str(config), "--no-tracking"]) == 0, capsys.readouterr().err
    best = next((tmp_path / "checkpoints").glob("*/best.pt"))
    state = read_checkpoint(best)
    assert state["variant"] == "metadata_gain" and "gain/weight_norm" in state["trainer"]["history"][0]
    assert any(k.startswith("conditioning.gain.") for k in state["model"])

    assert evaluate(["--checkpoint", str(best), "--out", str(tmp_path / "eval"), "--compute-device", "cpu"]) == 0
    report = json.loads((tmp_path / "eval" / "metrics_test.json").read_text())
    assert report["variant"] == "metadata_gain" and report["n_cycles"] > 0

    ctx = load_for_inference(best, device="cpu")
    assert isinstance(ctx.model.conditioning, MetadataGain) and ctx.model.gain_norm() > 0
    out = run_inference(ctx.model, build_split_loader(ctx, "test"), ctx.device)
    assert out.logits.shape == (report["n_cycles"], 2) and torch.isfinite(torch.from_numpy(out.logits)).all()
    # the options it was trained with travel in the checkpoint and come back typed
    assert isinstance(ctx.cfg.model("metadata_gain"), GainOptions) and ctx.cfg.model("metadata_gain").gain_hidden_dim == 8


def test_its_options_are_validated_like_the_built_in_ones(registered, tmp_path):
    from ls.config import ConfigError, config_from_dict

    cfg = config_from_dict({"dataset": {"data_folder": "x"}, "models": {"metadata_gain": {"gain_hidden_dim": 4}}})
    assert cfg.model("metadata_gain").gain_hidden_dim == 4 and cfg.model("metadata_gain").label_dim == 2
    with pytest.raises(ConfigError, match=r"variant metadata_gain \(Gain-AST\) has no option 'mask_init_scale'"):
        config_from_dict({"dataset": {"data_folder": "x"}, "models": {"metadata_gain": {"mask_init_scale": 1.0}}})


def test_an_unregistered_variant_is_a_clear_error():
    from ls.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="unknown model variant 'metadata_gain'; registered: ast, ast_fus"):
        config_from_dict({"dataset": {"data_folder": "x"}, "models": {"metadata_gain": {}}})
