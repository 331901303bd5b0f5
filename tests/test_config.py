"""The typed config system: YAML -> dataclasses, validation errors, overrides, dumping."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from ls.config import Config, ConfigError, config_from_dict, dump_yaml, flatten, load_config, to_dict
from ls.config.loader import parse_override

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
seed: 7
dataset:
  data_folder: /data/icbhi
  batch_size: 8
  n_cls: 2
  multi_label: false
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
        ("dataset:\n  data_folder: x\n  batchsize: 4\n",
         r"'dataset.batchsize' in .*cfg.yaml: unknown key; did you mean 'batch_size'\?"),
        ("seed: 1\n", r"'dataset' in .*cfg.yaml: missing required key"),
        ("dataset:\n  batch_size: 4\n", r"'dataset.data_folder' in .*cfg.yaml: missing required key"),
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
    with pytest.raises(ConfigError, match=r"'audio.wave_aug\[1\].pp' in .*cfg.yaml: unknown key; did you mean 'p'"):
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
    with pytest.raises(ConfigError, match=r"'dataset.bacth_size' in --set dataset.bacth_size=2: unknown key; did you "
                                          r"mean 'batch_size'"):
        load_config(path, overrides=["dataset.bacth_size=2"])
    with pytest.raises(ConfigError, match=r"'training.epochs' in --set training.epochs=many: expected an integer"):
        load_config(path, overrides=["training.epochs=many"])
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


RUN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")  # study and tune files: tests/test_tune.py
                     if not p.name.startswith("mlflow") and not p.stem.endswith(("_study", "_tune")))
STUDY_CONFIGS = sorted((REPO / "configs").glob("*_study.yaml"))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.models, f"{path.name} defines no model block"


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_study_loads_with_a_model_block_per_variant(path):
    from ls.study import load_study

    study = load_study(path)
    assert len(study.settings.variants) >= 2
    for variant in study.settings.variants:
        study.base.model(variant)  # raises when the variant has no models.<variant> block


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("val_fraction: 1.0", r"'dataset' in .*cfg.yaml: dataset.val_fraction must be in \[0, 1\), got 1.0"),
        ("random_test_fraction: 0", r"'dataset' in .*cfg.yaml: dataset.random_test_fraction must be in \(0, 1\)"),
        ("n_cls: 2\n  multi_label: true", r"'dataset.multi_label' in .*cfg.yaml: true needs a 4-class crackle/wheeze"),
        ("task: event7", r"'dataset.task' in .*cfg.yaml: 'event7' is not available for dataset kind icbhi"),
        ("name: manifest\n  classes: [normal]", r"'dataset.classes' in .*cfg.yaml: dataset.classes must be two or more"),
        ("name: sprsound\n  task: record3\n  n_cls: 4", r"'dataset.n_cls' in .*cfg.yaml: 4, but task record3 has 3"),
    ],
)
def test_dataset_split_and_label_mode_are_checked_at_load_time(tmp_path, dataset, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"dataset:\n  data_folder: x\n  {dataset}\n"))
    with pytest.raises(ConfigError, match=r"'dataset' in --set dataset.val_fraction=-0.1: dataset.val_fraction must"):
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


def test_the_command_lines_start_without_sklearn_matplotlib_or_mlflow():
    """``python ast_train.py --help`` and a config error do not wait for sklearn and friends (1.6 s instead of
    2.9 s on a 2-core machine): the modules that only the metrics, the data and the figures need are imported
    when those run."""
    import subprocess
    import sys

    code = ("import sys; heavy = ('sklearn', 'matplotlib', 'mlflow', 'scipy', 'pandas'); import ls.train; "
            "print(sorted(m for m in heavy if m in sys.modules)); import ls.evaluate, ls.predict; "
            "print(sorted(m for m in heavy[:4] if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "[]"], out


def test_every_problem_in_a_file_is_reported_at_once(tmp_path):
    text = """
    dataset:
      data_folder: x
      batch_sise: 4
      n_cls: 3
    models:
      ast_fus:
        mask_init_scale: 2.0
        dropot: 0.1
    training:
      epochs: many
    """
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    problems = err.value.problems
    assert len(problems) == 5 and str(err.value).startswith("5 problems in ")
    assert any("'dataset.batch_sise'" in p and "did you mean 'batch_size'" in p for p in problems)
    assert any("'dataset.n_cls'" in p and "not one of 2, 4" in p for p in problems)
    # a key of another variant's options: the error names the variant and whose option it is
    assert any("'models.ast_fus.mask_init_scale'" in p and "variant ast_fus (GRF-AST) has no option "
               "'mask_init_scale'; it is an option of ast_film_soft" in p for p in problems)
    assert any("'models.ast_fus.dropot'" in p and "did you mean 'dropout'" in p for p in problems)
    assert any("'training.epochs'" in p and "expected an integer" in p for p in problems)


def test_each_variant_reads_only_its_own_options(tmp_path):
    base = "dataset:\n  data_folder: x\nmodels:\n"
    grf = load_config(write(tmp_path, base + "  ast_fus: {init_gate: 0.2, hidden_dim: 16}\n"))
    assert grf.model("ast_fus").init_gate == 0.2 and grf.model("ast_fus").head_hidden_dim == 16  # hidden_dim: alias
    for block, key in (("ast: {conditioned_layers: [1]}", "conditioned_layers"),
                       ("ast_film: {mask_temperature: 0.5}", "mask_temperature"),
                       ("ast_tafilm: {film_init: zero}", "film_init")):
        with pytest.raises(ConfigError, match=f"has no option '{key}'"):
            load_config(write(tmp_path, base + f"  {block}\n"))


def test_aliases_set_typed_keys_and_a_key_given_twice_is_an_error(tmp_path):
    text = """
    dataset: {data_folder: x}
    models:
      ast_softfilm: {dev_embed_dim: 4, use_site: false, mask_sparsity_lambda: 0.02}
    training: {lr: 1.0e-4, warmup_epochs: 3, weight_decay: 0.01, freeze: {freeze_film: true}}
    """
    cfg = load_config(write(tmp_path, text))
    soft = cfg.model("ast_film_soft")
    assert soft.factor_emb_dims == {"device": 4, "site": 14}  # one entry set, the default kept for the rest
    assert soft.use_factors == {"site": False} and soft.mask_overlap_lambda == 0.02
    t = cfg.training
    assert (t.optimizer.lr, t.scheduler.warmup_epochs, t.optimizer.weight_decay) == (1e-4, 3, 0.01)
    assert t.freeze.freeze_conditioning is True
    with pytest.raises(ConfigError, match=r"'training.lr' in .*: given twice: as 'lr' and as 'optimizer.lr'"):
        load_config(write(tmp_path, "dataset: {data_folder: x}\ntraining: {lr: 1, optimizer: {lr: 2}}\n"))


def test_one_key_per_fact_derived_values_and_contradictions(tmp_path):
    cfg = load_config(write(tmp_path, "dataset: {data_folder: x, w: 256}\naudio: {n_mels: 64}\nmodels: {ast: {}}\n"))
    assert (cfg.dataset.h, cfg.model("ast").input_fdim, cfg.model("ast").input_tdim) == (64, 64, 256)
    assert cfg.model("ast").label_dim == 2 and cfg.output_mode.kind == "multilabel"
    binary = load_config(write(tmp_path, "dataset: {data_folder: x, n_cls: 2, multi_label: false}\n"
                                         "models: {ast: {}}\n"))
    assert binary.model("ast").label_dim == 1 and binary.output_mode.kind == "binary"
    with pytest.raises(ConfigError, match=r"'models.ast.label_dim' .*is 4 but the output mode is multilabel with 2"):
        load_config(write(tmp_path, "dataset: {data_folder: x}\nmodels: {ast: {label_dim: 4}}\n"))
    with pytest.raises(ConfigError, match=r"'training.n_cls' .*is 2 but dataset.n_cls is 4"):
        load_config(write(tmp_path, "dataset: {data_folder: x}\ntraining: {n_cls: 2}\n"))


def test_an_ls_0_1_softfilm_schedule_under_training_moves_to_the_model(tmp_path):
    text = "dataset: {data_folder: x}\nmodels: {ast_film_soft: {}, ast: {}}\ntraining: {mask_temperature_end: 0.3}\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.model("ast_film_soft").mask_temperature_end == 0.3 and not hasattr(cfg.training, "mask_temperature_end")
    clash = "dataset: {data_folder: x}\nmodels: {ast_film_soft: {mask_temperature_end: 0.1}}\n" \
            "training: {mask_temperature_end: 0.3}\n"
    with pytest.raises(ConfigError, match="keep only models.ast_film_soft.mask_temperature_end"):
        load_config(write(tmp_path, clash))


def test_mapping_options_merge_over_their_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "dataset: {data_folder: x}\nmodels: {ast_fus: {factor_emb_dims: {sex: 4}}}\n"))
    assert cfg.model("ast_fus").factor_emb_dims == {"device": 8, "site": 14, "sex": 4}


def test_the_papers_readme_key_settings_load_as_written(tmp_path):
    """The "Key settings" block of the paper's README (../shared/seed) loads verbatim; each value lands in its
    typed key."""
    from conftest import SHARED

    readme = SHARED / "seed" / "000_3a04142a6768d9e5.txt"
    if not readme.is_file():
        pytest.skip(f"SKIPPED (needs shared data): {readme} is absent; set LS_SHARED_DIR to run this test")
    text = readme.read_text(encoding="utf-8")
    start = text.index("```yaml\n# Model configuration")
    block = text[start + len("```yaml\n"): text.index("```", start + 8)]
    data = yaml.safe_load(block)
    assert set(data) == {"models", "training"}
    data["dataset"] = {"data_folder": "x"}  # the one required key the block leaves to the data section
    cfg = config_from_dict(data, "README key settings")
    soft = cfg.model("ast_softfilm")
    assert soft.variant == "ast_film_soft" and soft.label_dim == 2
    assert (soft.input_fdim, soft.input_tdim) == (128, 1024)
    assert soft.factor_emb_dims == {"device": 8, "site": 8}  # dev_embed_dim, site_embed_dim
    assert soft.rest_dim == 3 and soft.film_hidden_dim == 64 and soft.conditioned_layers == list(range(12))
    assert soft.dropout == 0.4 and soft.mask_init_scale == 2.0 and soft.mask_overlap_lambda == 0.01
    t = cfg.training
    assert (t.epochs, t.optimizer.lr, t.scheduler.warmup_epochs, t.optimizer.weight_decay, t.sensitivity_bias) == (
        100, 3e-5, 10, 0.01, 1.5)
    # rest_dim is checked against the metadata width when the model is built
    from ls.data.icbhi import full_metadata_spec
    from ls.models import build_model
    from ls.types import MetadataSpec

    with torch.device("meta"):
        assert build_model(soft, full_metadata_spec()).conditioning.factor_keys == ("dev", "site", "rest")
        two = MetadataSpec.build(full_metadata_spec().vocabularies(), ("age", "bmi"))
        with pytest.raises(ValueError, match="rest_dim is 3 but the data has 2 continuous feature"):
            build_model(soft, two)
