"""The shipped YAML configs: they load, match the paper's settings, state only what differs from the defaults,
and fail clearly without weights; the variant table, the root scripts, the configs and the figure labels agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from ls.config import load_config
from ls.models.variants import VARIANTS
from ls.train import scripts

REPO = Path(__file__).resolve().parents[1]

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
    # the config's output mode is consistent (the shipped ast_config.yaml was not: docs/fixes.md 11.2-1)
    assert cfg.output_mode.label_dim == label_dim
    assert t.amp == "auto"  # mixed precision on CUDA, as the original trained (never on CPU)


def _leaves(data, prefix=""):
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and k != "weights":
            yield from _leaves(v, key)
        else:
            yield key, v


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "mlflow.yaml"))
def test_shipped_configs_state_only_what_differs_from_the_defaults(name):
    """A key that repeats its default hides what is special about a config: none may."""
    from ls.config import config_from_dict
    from ls.utils.trees import to_dict

    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw.pop("study", None)  # a study file's plan (variants, seeds, selections) is stated in full: it is the point
    raw.pop("tune", None)  # so is a tune file's search
    defaults = to_dict(config_from_dict({"dataset": {"data_folder": "x"}, "models": {
        k: {} for k in raw.get("models", {})}}))
    for key, value in _leaves(raw):
        node = defaults
        for part in key.split("."):
            node = node[part]
        assert node != value, f"{name}: {key} repeats its default {value!r}"


def test_variants_scripts_configs_and_figure_labels_agree():
    """One variant table: every registered variant has a root script that trains it, a shipped config and a
    display name, and nothing outside the table lists variants."""
    table = {name: v for name, v in VARIANTS.items() if v.script}
    assert set(table) == {"ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft"}
    assert scripts() == {name: v.script for name, v in table.items()}
    assert {v[0] for v in PAPER.values()} == set(table)
    for name, variant in table.items():
        script = REPO / variant.script
        calls = [n for n in ast.walk(ast.parse(script.read_text())) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "main"]
        assert [c.args[0].value for c in calls] == [name], f"{script.name} must call main({name!r})"
        assert load_config(CONFIGS / f"{name}_config.yaml").model(name).variant == name
        assert variant.display_name.endswith("AST")
    from ls.viz.cli import _model_name

    class Ctx:
        path = "best.pt"

    for name, variant in table.items():
        Ctx.variant = name
        assert _model_name(Ctx, []) == variant.display_name


def test_best_params_and_quickstart_and_mlflow_configs_load():
    best = load_config(CONFIGS / "best_params_config.yaml")
    assert best.model("ast").label_dim == 2 and best.model("softfilm").conditioned_layers == [10, 11]
    quick = load_config(CONFIGS / "quickstart.yaml")
    assert quick.model("ast_film_soft").model_size == "tiny224" and quick.dataset.h == quick.audio.n_mels == 16
    assert quick.dataset.data_folder == "runs/quickstart/data_400rec_seed0"  # where ls.quickstart writes it
    from ls.runs.mirror import resolve_settings

    assert resolve_settings(mlflow_yaml=CONFIGS / "mlflow.yaml").experiment_name == "ls"


def test_missing_audioset_weights_give_a_clear_error(tmp_path):
    from ls.data.icbhi import full_metadata_spec
    from ls.models import build_model

    cfg = load_config(CONFIGS / "ast_film_soft_config.yaml",
                      [f"models.ast_film_soft.weights.path={tmp_path / 'absent.pth'}"])
    with pytest.raises((FileNotFoundError, ValueError), match="absent.pth"):
        build_model(cfg.model("ast_film_soft"), full_metadata_spec())


def test_unknown_variant_loss_or_scheduler_is_a_clear_error():
    from ls.config import ConfigError

    with pytest.raises(ConfigError, match="unknown model variant 'ast_magic'"):
        load_config(CONFIGS / "ast_config.yaml", ["models.ast_magic.label_dim=2"])
    with pytest.raises(ConfigError, match="scheduler.type"):
        load_config(CONFIGS / "ast_config.yaml", ["training.scheduler.type=linear"])
    with pytest.raises(ConfigError, match="unknown training.loss 'hinge'"):
        load_config(CONFIGS / "ast_config.yaml", ["training.loss=hinge"])
