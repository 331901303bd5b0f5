"""The shipped YAML configs: they load, match the paper's settings, and fail clearly without weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from ls.config import load_config
from ls.engine.runner import SCRIPTS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = {  # file -> (variant, n_cls, multi_label, label_dim, sensitivity_bias, raw_augment, conditioned layers)
    "ast_config.yaml": ("ast", 4, True, 2, 1.0, False, None),
    "ast_fus_config.yaml": ("ast_fus", 4, True, 2, 1.5, True, None),
    "ast_film_config.yaml": ("ast_film", 2, False, 1, 1.0, False, list(range(12))),
    "ast_tafilm_config.yaml": ("ast_tafilm", 2, False, 1, 1.0, False, list(range(12))),
    "ast_film_soft_config.yaml": ("ast_film_soft", 4, True, 2, 1.5, True, [10, 11]),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_variant_config_matches_the_paper(name):
    variant, n_cls, multi_label, label_dim, bias, augment, layers = PAPER[name]
    cfg = load_config(CONFIGS / name)
    m = cfg.model(variant)
    assert (cfg.dataset.n_cls, cfg.dataset.multi_label, m.label_dim) == (n_cls, multi_label, label_dim)
    assert (m.model_size, m.input_fdim, m.input_tdim, m.fstride, m.tstride) == ("base384", 128, 1024, 10, 10)
    assert m.weights.source == "audioset" and m.weights.path.endswith("audioset_10_10_0.4593.pth")
    assert m.dropout == 0.4 and cfg.seed == 42 and cfg.dataset.batch_size == 16
    t = cfg.training
    assert (t.epochs, t.optimizer.lr, t.optimizer.weight_decay, t.scheduler.type, t.scheduler.warmup_epochs) == (
        50, 3e-5, 0.05, "cosine_warmup", 10)
    assert t.sensitivity_bias == bias and t.loss == "bce" and t.grad_clip == 1.0
    assert cfg.audio.raw_augment is augment and cfg.audio.spec_aug[0].p == 0.3
    if layers is not None:
        assert m.conditioned_layers == layers
    # the config's output mode is consistent (the shipped ast_config.yaml was not: defect 11.2-1)
    from ls.engine.predict_rules import output_mode

    output_mode(cfg.dataset, m, t.loss, t.n_cls)


def test_every_script_has_a_config():
    for variant in SCRIPTS:
        assert any(v[0] == variant for v in PAPER.values())
        assert (CONFIGS.parent / SCRIPTS[variant]).is_file()


def test_best_params_and_quickstart_and_mlflow_configs_load():
    best = load_config(CONFIGS / "best_params_config.yaml")
    assert best.model("ast").label_dim == 2 and best.model("softfilm").conditioned_layers == [10, 11]
    quick = load_config(CONFIGS / "quickstart.yaml")
    assert quick.model("ast_film_soft").model_size == "tiny224" and quick.dataset.h == quick.audio.n_mels
    from ls.engine.tracking import resolve_settings

    assert resolve_settings(mlflow_yaml=CONFIGS / "mlflow.yaml").experiment_name == "ls"


def test_missing_audioset_weights_give_a_clear_error(tmp_path):
    from ls.models import build_model
    from ls.types import MetadataSpec

    cfg = load_config(CONFIGS / "ast_film_soft_config.yaml",
                      [f"models.ast_film_soft.weights.path={tmp_path / 'absent.pth'}"])
    spec = MetadataSpec(("<unknown>", "A"), ("<unknown>", "Tc"), ("age", "bmi", "duration"))
    with pytest.raises((FileNotFoundError, ValueError), match="absent.pth"):
        build_model(cfg.model("ast_film_soft"), spec)


def test_unknown_variant_loss_or_scheduler_is_a_clear_error():
    from ls.config import ConfigError

    with pytest.raises(ConfigError, match="unknown model variant 'ast_magic'"):
        load_config(CONFIGS / "ast_config.yaml", ["models.ast_magic.label_dim=2"])
    with pytest.raises(ConfigError, match="scheduler.type"):
        load_config(CONFIGS / "ast_config.yaml", ["training.scheduler.type=linear"])
    from ls.engine.predict_rules import output_mode

    cfg = load_config(CONFIGS / "ast_config.yaml", ["training.loss=hinge"])
    with pytest.raises(ValueError, match="hinge"):
        output_mode(cfg.dataset, cfg.model("ast"), cfg.training.loss)
