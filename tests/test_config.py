"""The typed config system: YAML -> dataclasses, validation errors, overrides, dumping."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from ls.config import Config, ConfigError, dump_yaml, flatten, load_config, to_dict
from ls.config.loader import parse_override

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
seed: 7
dataset:
  data_folder: /data/icbhi
  batch_size: 8
models:
  tafilm:
    label_dim: 1
    conditioned_layers: [0, 5]
training:
  optimizer:
    lr: 3e-5
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_loads_into_typed_dataclasses(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg, Config)
    assert cfg.seed == 7
    assert cfg.dataset.batch_size == 8
    # PyYAML reads 3e-5 as a string; the typed loader turns it into the float the field declares
    assert cfg.training.optimizer.lr == pytest.approx(3e-5)
    assert isinstance(cfg.training.optimizer.lr, float)


def test_model_block_keyed_by_alias_gets_canonical_variant(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    block = cfg.model("ast_tafilm")
    assert block.variant == "ast_tafilm"
    assert block.label_dim == 1 and block.conditioned_layers == [0, 5]
    assert cfg.model("tafilm") is block


def test_missing_model_block_names_what_is_present(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match=r"no 'models.ast_film_soft' block.*tafilm"):
        cfg.model("ast_film_soft")


@pytest.mark.parametrize(
    "snippet, message",
    [
        ("dataset:\n  data_folder: x\n  batchsize: 4\n", r"unknown key 'dataset.batchsize' in .*cfg.yaml"),
        ("seed: 1\n", r"missing required key 'dataset' in .*cfg.yaml"),
        ("dataset:\n  batch_size: 4\n", r"missing required key 'dataset.data_folder'"),
        ("dataset:\n  data_folder: x\n  batch_size: four\n", r"'dataset.batch_size' .*expected an integer"),
        ("dataset:\n  data_folder: x\n  n_cls: 3\n", r"'dataset.n_cls' .*not one of 2, 4"),
        ("dataset:\n  data_folder: x\nmodels:\n  resnet: {}\n", r"'models.resnet' .*unknown model variant"),
        ("dataset:\n  data_folder: x\naudio:\n  mel_norm: null\n", r"'audio.mel_norm' .*null is not allowed"),
        ("dataset:\n  data_folder: x\naudio:\n  wave_aug: {type: noise}\n", r"'audio.wave_aug' .*expected a list"),
        ("dataset:\n  data_folder: x\ntraining:\n  optimizer: 3\n", r"'training.optimizer' .*expected a mapping"),
    ],
)
def test_invalid_configs_name_the_key_and_the_file(tmp_path, snippet, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, snippet))


def test_nested_list_items_are_validated_with_their_index(tmp_path):
    text = "dataset:\n  data_folder: x\naudio:\n  wave_aug:\n    - {type: noise, p: 0.1}\n    - {type: speed, pp: 1}\n"
    with pytest.raises(ConfigError, match=r"unknown key 'audio.wave_aug\[1\].pp'"):
        load_config(write(tmp_path, text))


def test_overrides_apply_with_yaml_typed_values(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL),
        overrides=["dataset.batch_size=32", "training.optimizer.lr=1e-4", "models.tafilm.conditioned_layers=[1,2]"],
    )
    assert cfg.dataset.batch_size == 32
    assert cfg.training.optimizer.lr == pytest.approx(1e-4)
    assert cfg.model("tafilm").conditioned_layers == [1, 2]


def test_bad_override_is_reported_with_the_override_text(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, overrides=["dataset.batch_size"])
    with pytest.raises(ConfigError, match=r"unknown key 'dataset.bacth_size' .*with overrides dataset.bacth_size=2"):
        load_config(path, overrides=["dataset.bacth_size=2"])
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_missing_or_malformed_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "dataset: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), overrides=["dataset.batch_size=3"])
    out = tmp_path / "resolved.yaml"
    text = dump_yaml(cfg, out)
    assert out.read_text() == text
    again = load_config(out)
    assert to_dict(again) == to_dict(cfg)
    assert yaml.safe_load(text)["models"]["tafilm"]["variant"] == "ast_tafilm"


def test_flatten_gives_dotted_keys_for_tracking(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    flat = flatten(cfg)
    assert flat["dataset.batch_size"] == 8
    assert flat["models.tafilm.conditioned_layers"] == [0, 5]
    assert flat["training.optimizer.lr"] == pytest.approx(3e-5)


RUN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("mlflow"))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.models, f"{path.name} defines no model block"


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("val_fraction: 1.0", r"dataset in .*cfg.yaml: dataset.val_fraction must be in \[0, 1\), got 1.0"),
        ("random_test_fraction: 0", r"dataset in .*cfg.yaml: dataset.random_test_fraction must be in \(0, 1\)"),
        ("n_cls: 2\n  multi_label: true", r"dataset in .*cfg.yaml: dataset.multi_label=true needs dataset.n_cls=4"),
    ],
)
def test_dataset_split_and_label_mode_are_checked_at_load_time(tmp_path, dataset, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"dataset:\n  data_folder: x\n  {dataset}\n"))
    with pytest.raises(ConfigError, match=r"cfg.yaml \(with overrides dataset.val_fraction=-0.1\): dataset.val_fraction must"):
        load_config(write(tmp_path, MINIMAL), ["dataset.val_fraction=-0.1"])


def test_import_ls_config_stays_light():
    """``import ls.config`` (and loading a config) must not pull in torch, torchaudio, soundfile or mlflow:
    ls.data / ls.models export lazily."""
    import subprocess
    import sys

    code = ("import sys, ls.config; heavy = ('torch', 'torchaudio', 'soundfile', 'mlflow', 'matplotlib', 'pandas'); "
            "print(sorted(m for m in heavy if m in sys.modules)); "
            f"ls.config.load_config({str(REPO / 'configs' / 'ast_film_soft_config.yaml')!r}); "
            "print(sorted(m for m in heavy[:5] if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "[]"], out
    # the lazy exports still resolve
    from ls.data import build_datasets
    from ls.models import build_model

    assert callable(build_datasets) and callable(build_model)
