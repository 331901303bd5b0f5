"""Configs of the original implementation: they load with the meaning they had there, their root scripts stop
only at the missing data folder or weights file, strict mode rejects them, and migration writes the same run
in ls's keys.

The six files under tests/fixtures/original_configs/ stand for the original's shipped run configs (written from
their description, not copied); their paths lead nowhere on purpose.
"""

from __future__ import annotations

import dataclasses
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from test_evaluate_predict import tiny_checkpoints  # noqa: F401  (session fixture shared with that module)

from ls.config import ConfigError, OriginalConfigWarning, config_from_dict, load_config
from ls.config.migrate import main as migrate_main
from ls.config.migrate import migrate, resolved
from ls.config.original import BUILDER_DEFAULTS, MARKERS, READ
from ls.models.variants import VARIANTS, get_variant

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "original_configs"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATA = "/nonexistent/ls-original-fixture/icbhi_dataset"
WEIGHTS = "/nonexistent/ls-original-fixture/pretrained/audioset_10_10_0.4593.pth"
TRAINING = {  # fixture -> variant its root script trains
    "ast_config.yaml": "ast",
    "ast_fus_config.yaml": "ast_fus",
    "ast_film_config.yaml": "ast_film",
    "ast_tafilm_config.yaml": "ast_tafilm",
    "ast_film_soft_config.yaml": "ast_film_soft",
}
ALL = [*TRAINING, "best_params_config.yaml"]
#: Ignored in every training config: declared in the original, never read by its scripts.
DEAD_TRAINING = {"training.alpha", "training.gamma", "training.use_class_weights", "training.kfold_splits",
                 "training.early_stopping", "training.grad_clip", "training.hardware"}
SOFT_COPIES = {f"training.{k}" for k in (
    "mask_sparsity_lambda", "mask_coverage_lambda", "mask_init_scale", "mask_lr_multiplier", "film_init_gain",
    "per_layer_masks", "conditioned_layers", "dev_emb_dim", "site_emb_dim", "metadata_hidden_dim",
    "film_hidden_dim", "debug_film")}


def _weights(block):
    return [f"models.{block}.{k}" for k in ("audioset_pretrain", "imagenet_pretrain", "audioset_ckpt_path")]


#: fixture -> (translated keys, ignored keys): every key the translation touched, exactly.
EXPECTED = {
    "ast_config.yaml": (
        {*_weights("ast"), "training.n_cls", "dataset.multi_label"},
        {"models.ast.name", *DEAD_TRAINING}),
    "ast_fus_config.yaml": (
        {*_weights("ast_meta_proj"), "models.ast_meta_proj.dropout_p", "models.ast_meta_proj.use_missing_flags",
         "training.n_cls"},
        {"models.ast_meta_proj.name", "models.ast_meta_proj.dropout", *DEAD_TRAINING}),
    "ast_film_config.yaml": (
        {*_weights("ast_film"), "models.ast_film.dropout_p", "training.n_cls"},
        {"models.ast_film.name", "models.ast_film.dropout", "models.ast_film.use_missing_flags",
         "models.ast_film.debug_film", *DEAD_TRAINING}),
    "ast_tafilm_config.yaml": (
        {*_weights("tafilm"), "training.n_cls"},
        {"models.tafilm.name", "models.tafilm.use_missing_flags", "models.tafilm.debug", *DEAD_TRAINING}),
    "ast_film_soft_config.yaml": (
        {*_weights("ast_film_soft"), "training.n_cls", "training.mask_temperature", "training.mask_temperature_end",
         "training.mask_temperature_warmup"},
        {"models.ast_film_soft.name", "models.ast_film_soft.debug_film", "models.ast_film_soft.mask_lr_multiplier",
         "models.ast_film_soft.mask_temperature", "models.ast_film_soft.mask_temperature_end",
         "models.ast_film_soft.mask_temperature_warmup", "training.optimizer.mask_lr_scale", *DEAD_TRAINING,
         *SOFT_COPIES}),
    "best_params_config.yaml": (
        {*_weights("ast"), *_weights("ast_film_soft"), "dataset.multi_label"},
        {"models.ast.name", "models.ast_film_soft.name", "models.ast_film_soft.debug_film",
         "models.ast_film_soft.mask_lr_multiplier", "models.ast_film_soft.mask_temperature_end",
         "models.ast_film_soft.mask_temperature_warmup"}),
}


def load_quietly(path, overrides=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OriginalConfigWarning)
        return load_config(path, overrides, **kwargs)


def from_dict_quietly(data, overrides=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OriginalConfigWarning)
        return config_from_dict(data, "cfg.yaml", overrides, **kwargs)


# -- the six configs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_original_config_loads_with_one_warning_listing_every_translation(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(FIXTURES / name)
    ours = [w for w in caught if issubclass(w.category, OriginalConfigWarning)]
    assert len(ours) == 1
    text = str(ours[0].message)
    notes = cfg.translation.notes
    translated, ignored = EXPECTED[name]
    assert {n.key for n in notes if n.action == "translated"} == translated
    assert {n.key for n in notes if n.action == "ignored"} == ignored
    # every shipped block states its keys; the one absent setting is the precision the original trained in
    assert {n.target for n in notes if n.action == "default"} == ({"training.amp"} if name in TRAINING else set())
    for note in notes:
        assert note.line() in text and note.reason
    if name in TRAINING:
        assert "training.hardware: ignored, use torchrun" in text
        assert "training.kfold_splits: ignored, use --kfold" in text
    assert "python -m ls.config.migrate" in text
    # the weights keys become weights.source / weights.path in every block
    for block in cfg.models.values():
        assert (block.weights.source, block.weights.path) == ("audioset", WEIGHTS)
        assert (block.model_size, block.fstride, block.tstride, block.dropout) == ("base384", 10, 10, 0.4)
    assert cfg.dataset.data_folder == DATA and cfg.seed == 42


@pytest.mark.parametrize("name", list(TRAINING))
def test_training_configs_mean_what_they_meant_in_the_original(name):
    cfg = load_quietly(FIXTURES / name)
    variant = TRAINING[name]
    m = cfg.model(variant)
    t = cfg.training
    binary = variant in ("ast_film", "ast_tafilm")
    # the original's training loop chose the mode from training.n_cls (ast_config.yaml's multi_label: false
    # contradicted it and crashed there): binary for FiLM/TAFiLM, multi-label otherwise
    assert cfg.output_mode.kind == ("binary" if binary else "multilabel")
    assert (cfg.dataset.n_cls, cfg.dataset.multi_label, m.label_dim) == ((2, False, 1) if binary else (4, True, 2))
    # dead keys do not act in ls either: no early stopping (the original ran all epochs), clipping at 1.0
    assert t.early_stopping is None and t.grad_clip == 1.0 and t.loss == "bce"
    assert (t.epochs, t.optimizer.lr, t.optimizer.weight_decay, t.scheduler.type) == (50, 3e-5, 0.05, "cosine_warmup")
    assert t.sensitivity_bias == (1.5 if variant in ("ast_fus", "ast_film_soft") else 1.0)
    assert t.amp == "fp16"  # the original's fp16 autocast + GradScaler (ls's auto: bf16 on an A100/H100)
    assert cfg.audio.raw_augment is (variant in ("ast_fus", "ast_film_soft"))
    if variant != "ast":
        assert m.factor_emb_dims == {"device": 8, "site": 14}
    if variant == "ast_fus":
        assert (m.head_hidden_dim, m.init_gate, cfg.dataset.use_missing_flags) == (32, 0.5, False)
    if variant in ("ast_film", "ast_tafilm"):
        assert m.conditioned_layers == list(range(12)) and m.use_improved_continuous_encoder
    if variant == "ast_film_soft":
        assert m.conditioned_layers == [10, 11] and m.mask_overlap_lambda == 0.01
        assert (m.mask_temperature, m.mask_temperature_end, m.mask_temperature_warmup) == (1.0, 0.2, 5)
        # mask_lr_scale 1.5 acted only under use_differential_lr (off); ls would apply it, so it is dropped
        assert t.optimizer.mask_lr_scale is None and not t.optimizer.use_differential_lr


def test_figures_config_reads_both_models_in_multilabel_mode():
    cfg = load_quietly(FIXTURES / "best_params_config.yaml")
    assert cfg.output_mode.kind == "multilabel" and cfg.dataset.multi_label
    soft = cfg.model("ast_film_soft")
    assert cfg.model("ast").label_dim == soft.label_dim == 2
    assert soft.conditioned_layers == [10, 11] and soft.mask_temperature == 1.0


def test_configs_in_ls_keys_are_not_translated():
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.name == "mlflow.yaml" or path.stem.endswith(("_study", "_tune")):  # study/tune files: not run configs
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error", OriginalConfigWarning)
            cfg = load_config(path, strict=True)
        assert not cfg.translation.original and not cfg.translation.notes


# -- root scripts ------------------------------------------------------------------------------------------------
def _stops_at(run, capsys, what):
    """Run a command line; it must stop on ``what`` (the data folder or the weights file), not on a config key,
    either as an exception naming it or as a non-zero exit with an ``error:`` line naming it."""
    try:
        rc = run()
    except (FileNotFoundError, ValueError) as exc:  # ls.train lets a missing folder / weights file propagate
        assert what in str(exc), exc
        assert not isinstance(exc, ConfigError)
        return capsys.readouterr().err
    err = capsys.readouterr().err
    assert rc not in (0, None) and what in err, err
    assert "unknown key" not in err and "problems in" not in err, err  # not a config error
    return err


@pytest.mark.parametrize("name", list(TRAINING))
def test_root_script_stops_only_at_the_missing_data_folder(name, tmp_path, monkeypatch, capsys):
    from ls.train import main

    monkeypatch.chdir(tmp_path)
    err = _stops_at(lambda: main(TRAINING[name], ["--config", str(FIXTURES / name), "--no-tracking"]), capsys, DATA)
    assert err.count("is written for the original implementation") == 1  # the run's one warning
    assert err.startswith("warning: ") and "training.hardware: ignored, use torchrun" in err


def test_root_script_stops_at_the_missing_weights_file(synthetic_icbhi_dir, tmp_path, monkeypatch, capsys):
    """With data in place, the SoftFiLM config runs up to the pretrained weights its audioset_ckpt_path names."""
    from ls.train import main

    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_folder={synthetic_icbhi_dir}", "dataset.cycle_metadata_path=null",
                 f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.cache_workers=0", "dataset.w=64",
                 "models.ast_film_soft.input_tdim=64", "models.ast_film_soft.model_size=tiny224"]
    argv = ["--config", str(FIXTURES / "ast_film_soft_config.yaml"), "--no-tracking"]
    for override in overrides:
        argv += ["--set", override]
    _stops_at(lambda: main("ast_film_soft", argv), capsys, WEIGHTS)


def test_figures_script_stops_only_at_the_missing_data_folder(tiny_checkpoints, tmp_path, capsys):  # noqa: F811
    from ls.viz.cli import main

    argv = ["--all", "--checkpoint", str(tiny_checkpoints["ast_film_soft"]), "--baseline-ckpt",
            str(tiny_checkpoints["ast"]), "--config", str(FIXTURES / "best_params_config.yaml"), "--out",
            str(tmp_path / "figs"), "--compute-device", "cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _stops_at(lambda: main(argv), capsys, DATA)
    assert any(issubclass(w.category, OriginalConfigWarning) for w in caught)


# -- strict mode ----------------------------------------------------------------------------------------------
def test_strict_mode_turns_every_translation_into_an_error(tmp_path, monkeypatch, capsys):
    path = FIXTURES / "ast_film_soft_config.yaml"
    expected = set().union(*EXPECTED["ast_film_soft_config.yaml"]) | {"training.amp"}  # absent: the original's fp16
    for kwargs, overrides in (({"strict": True}, None), ({}, ["strict_config=true"])):
        with pytest.raises(ConfigError) as err:
            load_config(path, overrides, **kwargs)
        problems = err.value.problems
        assert len(problems) == len(expected)
        assert {p.split("'")[1] for p in problems} == expected
        assert all("strict_config" in p for p in problems)
    assert load_quietly(path, ["strict_config=false"]).strict_config is False
    # on the command line: one error line, exit 2, nothing run
    from ls.train import main

    monkeypatch.chdir(tmp_path)
    assert main("ast_film_soft", ["--config", str(path), "--no-tracking", "--strict-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'training.hardware'" in err and "warning:" not in err
    assert not (tmp_path / "checkpoints").exists()


def test_strict_config_key_in_the_file_is_honoured(tmp_path):
    text = (FIXTURES / "ast_config.yaml").read_text() + "strict_config: true\n"
    (tmp_path / "strict.yaml").write_text(text)
    with pytest.raises(ConfigError, match="'models.ast.audioset_pretrain'.*strict_config"):
        load_config(tmp_path / "strict.yaml")


# -- migration -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_migrated_config_is_the_same_run_in_ls_keys(name, tmp_path):
    original = load_quietly(FIXTURES / name)
    text, translation = migrate(FIXTURES / name)
    out = tmp_path / "new.yaml"
    out.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OriginalConfigWarning)
        migrated = load_config(out, strict=True)  # only ls keys
    assert resolved(migrated) == resolved(original)
    data = yaml.safe_load(text)
    for variant in data["models"]:
        assert variant in VARIANTS  # canonical names (ast_meta_proj -> ast_fus)
    # every translated key that is written carries a comment naming where it came from
    lines = text.splitlines()
    source_line = next(line for line in lines if line.strip().startswith("source: audioset"))
    assert "# was audioset_pretrain: true, imagenet_pretrain: true" in source_line
    path_line = next(line for line in lines if line.strip().startswith("path: "))
    assert path_line.endswith("# was audioset_ckpt_path")
    # the keys with no effect are listed in the header, with why
    for note in translation.notes:
        if note.action == "ignored":
            assert f"#   {note.line()}" in lines


def _leaves(data, prefix=""):
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            yield from _leaves(v, key)
        else:
            yield key


def test_migration_keeps_only_what_differs_from_the_defaults():
    text, _ = migrate(FIXTURES / "ast_film_soft_config.yaml")
    assert set(_leaves(yaml.safe_load(text))) == {
        "dataset.data_folder", "dataset.cycle_metadata_path", "audio.raw_augment",
        "dataset.num_workers",  # the original's 0; ls defaults to auto (worker processes on a GPU)
        "models.ast_film_soft.weights.source", "models.ast_film_soft.weights.path", "training.sensitivity_bias",
        "training.scheduler.reduce_metric",
        "training.amp"}  # fp16, as the original trained (ls's default auto is bf16 on an A100/H100)
    text, _ = migrate(FIXTURES / "ast_fus_config.yaml")
    data = yaml.safe_load(text)
    assert data["models"] == {"ast_fus": {"weights": {"source": "audioset", "path": WEIGHTS}, "head_hidden_dim": 32}}
    assert "ast_fus:  # was models.ast_meta_proj" in text and "head_hidden_dim: 32  # was hidden_dim" in text


def test_migrate_command_line(tmp_path, capsys):
    path = FIXTURES / "ast_tafilm_config.yaml"
    assert migrate_main([str(path)]) == 0
    captured = capsys.readouterr()
    assert "4 keys translated" in captured.err and "10 ignored" in captured.err
    out = tmp_path / "new.yaml"
    assert migrate_main([str(path), "-o", str(out), "--set", "dataset.data_folder=/data/icbhi"]) == 0
    assert out.read_text() == captured.out.replace(DATA + "\n", "/data/icbhi\n")
    assert load_quietly(out).dataset.data_folder == "/data/icbhi"
    assert migrate_main([str(tmp_path / "absent.yaml")]) == 2
    assert "error: config file not found" in capsys.readouterr().err


# -- translation rules, one at a time ----------------------------------------------------------------------------
def block(variant: str, **keys) -> dict:
    """A config with one model block in the original's format (``name`` marks it)."""
    return {"dataset": {"data_folder": "x"}, "models": {variant: {"name": variant, **keys}}}


def notes_of(cfg) -> dict[str, str]:
    return {n.key: n.action for n in cfg.translation.notes}


def test_markers_are_keys_ls_does_not_have():
    """A marker must never be an ls key, or a config in ls's keys would be read as the original's."""
    for variant in VARIANTS.values():
        known = {f.name for f in dataclasses.fields(variant.options)} | set(variant.options.__aliases__)
        assert not MARKERS["models.*"] & known, variant.name
    from ls.engine.config import TrainingConfig

    assert not MARKERS["training"] & ({f.name for f in dataclasses.fields(TrainingConfig)}
                                      | set(TrainingConfig.__aliases__))


def test_every_key_the_original_read_has_its_ls_meaning():
    """Each key the original's builder read is an ls key (or alias) of that variant, or is translated."""
    translated = {"audioset_pretrain", "imagenet_pretrain", "audioset_ckpt_path", "dropout_p", "dropout",
                  "use_missing_flags", "verbose", "debug", "debug_film"}
    for variant, keys in READ.items():
        options = get_variant(variant).options
        known = {f.name for f in dataclasses.fields(options)} | set(options.__aliases__)
        assert keys - known <= translated, (variant, keys - known - translated)
    for variant, defaults in BUILDER_DEFAULTS.items():
        known = {f.name for f in dataclasses.fields(get_variant(variant).options)}
        assert {ls_key for _, ls_key, _ in defaults} <= known


@pytest.mark.parametrize("flags, source, path, ckpt_note", [
    ({"audioset_pretrain": True, "imagenet_pretrain": True}, "audioset", "/w/as.pth", "translated"),
    ({"audioset_pretrain": True, "imagenet_pretrain": False}, "audioset", "/w/as.pth", "translated"),
    ({"audioset_pretrain": False, "imagenet_pretrain": True}, "imagenet", None, "ignored"),
    ({"audioset_pretrain": 0, "imagenet_pretrain": 0}, "none", None, "ignored"),
    ({}, "audioset", "/w/as.pth", "translated"),  # the builder's defaults: both true
])
def test_weight_flags_choose_weights_source_and_path(flags, source, path, ckpt_note):
    cfg = from_dict_quietly(block("ast", audioset_ckpt_path="/w/as.pth", **flags))
    weights = cfg.model("ast").weights
    assert (weights.source, weights.path) == (source, path)
    assert notes_of(cfg)["models.ast.audioset_ckpt_path"] == ckpt_note
    if not flags:
        assert notes_of(cfg)["models.ast.weights.source"] == "default"


def test_imagenet_weights_stop_the_model_build_naming_the_file_and_the_key():
    """The original downloaded DeiT at run time; ls never does: building the model says what to get."""
    from ls.models import build_model
    from ls.models.weights import WeightsError

    cfg = from_dict_quietly(block("ast", audioset_pretrain=False, imagenet_pretrain=True, model_size="tiny224"),
                            ["dataset.w=32", "audio.n_mels=16"])
    with pytest.raises(WeightsError, match=r"deit_tiny_distilled_patch16_224.*models\.ast\.weights\.path"):
        build_model(cfg.model("ast"))


def test_weights_from_the_command_line_win_over_the_files_and_both_in_the_file_is_an_error():
    cfg = from_dict_quietly(block("ast", audioset_ckpt_path="/w/as.pth"), ["models.ast.weights.path=/mine.pth"])
    assert (cfg.model("ast").weights.source, cfg.model("ast").weights.path) == ("audioset", "/mine.pth")
    with pytest.raises(ConfigError, match="'models.ast.weights'.*given twice"):
        from_dict_quietly(block("ast", audioset_pretrain=True, weights={"source": "none"}))
    with pytest.raises(ConfigError, match="'models.ast.audioset_pretrain'.*expected true/false"):
        from_dict_quietly(block("ast", audioset_pretrain="maybe"))


@pytest.mark.parametrize("variant, keys, dropout, notes", [
    ("ast_meta_proj", {"dropout": 0.1, "dropout_p": 0.25}, 0.25, {"dropout": "ignored", "dropout_p": "translated"}),
    ("ast_film", {"dropout": 0.1, "dropout_p": 0.25}, 0.25, {"dropout": "ignored", "dropout_p": "translated"}),
    ("tafilm", {"dropout": 0.1, "dropout_p": 0.25}, 0.1, {"dropout_p": "ignored"}),
    ("ast_film_soft", {"dropout": 0.1, "dropout_p": 0.25}, 0.1, {"dropout_p": "ignored"}),
    ("ast", {"dropout": 0.1}, 0.1, {}),
    # absent: the original builder's default, not ls's 0.4
    ("ast", {}, 0.0, {"dropout": "default"}),
    ("ast_meta_proj", {"dropout": 0.1}, 0.3, {"dropout": "default"}),
    ("tafilm", {}, 0.3, {"dropout": "default"}),
    ("ast_film_soft", {}, 0.3, {"dropout": "default"}),
])
def test_dropout_is_read_where_the_original_read_it(variant, keys, dropout, notes):
    cfg = from_dict_quietly(block(variant, **keys))
    assert cfg.model(variant).dropout == dropout
    got = {k.rsplit(".", 1)[1]: a for k, a in notes_of(cfg).items() if k.rsplit(".", 1)[1] in ("dropout", "dropout_p")}
    assert got == notes


def test_builder_defaults_where_they_differ_from_ls():
    assert from_dict_quietly(block("tafilm")).model("tafilm").conditioned_layers == [10, 11]
    assert from_dict_quietly(block("ast_meta_proj")).model("grf").head_hidden_dim == 64
    # given: the file's value
    assert from_dict_quietly(block("ast_meta_proj", hidden_dim=16)).model("grf").head_hidden_dim == 16


def test_keys_a_variant_did_not_read_are_ignored_not_applied():
    cfg = from_dict_quietly(block("ast_film_soft", use_device=False, use_improved_continuous_encoder=False,
                                  init_gate=0.1))
    assert cfg.model("ast_film_soft").use_factors == {}  # SoftFiLM had no ablation flags in the original
    assert {k: a for k, a in notes_of(cfg).items() if a == "ignored"} == {
        "models.ast_film_soft.name": "ignored", "models.ast_film_soft.use_device": "ignored",
        "models.ast_film_soft.use_improved_continuous_encoder": "ignored", "models.ast_film_soft.init_gate": "ignored"}
    # the variants that did read them keep them
    assert from_dict_quietly(block("ast_film", use_device=False)).model("ast_film").use_factors == {"device": False}


def test_a_typo_in_an_original_config_stays_an_error():
    with pytest.raises(ConfigError, match="'models.ast_meta_proj.init_gtae'.*did you mean 'init_gate'"):
        from_dict_quietly(block("ast_meta_proj", init_gtae=0.1))
    with pytest.raises(ConfigError, match=r"'models.ast_meta_proj.dropout_p' \(= 'models.ast_meta_proj.dropout'\)"):
        from_dict_quietly(block("ast_meta_proj", dropout_p="lots"))


def test_grf_missing_flags_move_to_the_dataset():
    cfg = from_dict_quietly(block("ast_meta_proj", use_missing_flags=True))
    assert cfg.dataset.use_missing_flags is True
    assert notes_of(cfg)["models.ast_meta_proj.use_missing_flags"] == "translated"
    data = block("ast_meta_proj", use_missing_flags=True)
    data["dataset"]["use_missing_flags"] = False
    with pytest.raises(ConfigError, match="'models.ast_meta_proj.use_missing_flags'.*dataset.use_missing_flags"):
        from_dict_quietly(data)


@pytest.mark.parametrize("training, dataset, kind, loss", [
    ({"n_cls": 2, "loss": "focal"}, {"n_cls": 4, "multi_label": True}, "binary", "bce"),
    ({"binary_mode": True}, {}, "binary", "bce"),
    ({"n_cls": 4, "loss": "weighted_ce"}, {"multi_label": False}, "multilabel", "bce"),
    ({"n_cls": 4, "loss": "composite"}, {}, "multilabel", "composite"),
    ({"loss": "asymmetric"}, {"n_cls": 2, "multi_label": False}, "multilabel", "asymmetric"),  # n_cls absent
])
def test_the_training_loop_decides_the_output_mode_and_loss(training, dataset, kind, loss):
    data = block("ast", label_dim=1 if kind == "binary" else 2)
    data["training"] = training
    data["dataset"].update(dataset)
    cfg = from_dict_quietly(data)
    assert cfg.output_mode.kind == kind and cfg.training.loss == loss and cfg.training.n_cls is None


def test_optimizer_keys_act_as_in_the_original():
    data = block("ast_film_soft")
    data["training"] = {"optimizer": {"type": "sgd", "betas": [0.5, 0.6], "momentum": 0.9, "mask_lr_multiplier": 10.0,
                                      "use_differential_lr": True, "mask_lr_scale": 1.5}}
    cfg = from_dict_quietly(data)
    opt = cfg.training.optimizer
    assert (opt.type, opt.betas, opt.mask_lr_scale, opt.use_differential_lr) == ("adamw", [0.9, 0.999], 1.5, True)
    assert {k for k, a in notes_of(cfg).items() if a == "ignored"} >= {
        "training.optimizer.type", "training.optimizer.betas", "training.optimizer.momentum",
        "training.optimizer.mask_lr_multiplier"}


def test_temperature_schedule_comes_from_training_and_model_copies_are_ignored():
    data = block("ast_film_soft", mask_temperature=0.7, mask_temperature_end=0.5)
    data["training"] = {"mask_temperature": 2.0, "mask_temperature_warmup": 3, "per_layer_masks": True}
    cfg = from_dict_quietly(data)
    m = cfg.model("ast_film_soft")
    assert (m.mask_temperature, m.mask_temperature_end, m.mask_temperature_warmup) == (2.0, 0.2, 3)
    assert m.per_layer_masks is False  # the training copy is not read
    notes = notes_of(cfg)
    assert notes["models.ast_film_soft.mask_temperature"] == notes["training.per_layer_masks"] == "ignored"
    # without a training schedule, the model's initial temperature stands; without SoftFiLM, nothing reads it
    assert from_dict_quietly(block("ast_film_soft", mask_temperature=0.7)).model("softfilm").mask_temperature == 0.7
    data = block("ast")
    data["training"] = {"mask_temperature": 2.0}
    assert notes_of(from_dict_quietly(data))["training.mask_temperature"] == "ignored"


def test_audio_normalisation_augmentation_and_mlflow_sections():
    from ls.data.features import AUDIOSET_MEAN, AUDIOSET_STD

    data = block("ast")
    data["audio"] = {"mel_norm": "HF", "wave_aug": [{"type": "noise", "p": 1}, {"type": "speed", "p": 0.1}]}
    data["mlflow"] = {"tracking_uri": "http://somewhere"}
    cfg = from_dict_quietly(data)
    # the original's `hf` divided by one AudioSet std; ls's custom normalisation with the same constants is that
    assert (cfg.audio.mel_norm, cfg.audio.custom_mean, cfg.audio.custom_std) == ("custom", AUDIOSET_MEAN, AUDIOSET_STD)
    assert [e.p for e in cfg.audio.wave_aug] == [0.0, 0.1]  # p = 1 dropped the entry in the original
    assert cfg.mlflow is None and notes_of(cfg)["mlflow"] == "ignored"
    data["audio"] = {"mel_norm": "off"}
    assert from_dict_quietly(data).audio.mel_norm == "none"


def test_run_tags_record_the_translation():
    from ls.runs.run import run_tags

    cfg = load_quietly(FIXTURES / "ast_config.yaml")
    tag = run_tags(cfg, "ast")["config_translation"]
    assert "models.ast.audioset_pretrain -> models.ast.weights.source" in tag and "training.hardware" in tag
    assert "config_translation" not in run_tags(load_quietly(CONFIGS / "ast_config.yaml"), "ast")


def test_original_keys_under_a_config_without_markers_keep_ls_validation(tmp_path):
    """Without a marker the file is ls's: a key of another variant stays an error (not silently ignored)."""
    text = textwrap.dedent("""
        dataset: {data_folder: x}
        models:
          ast_fus: {mask_init_scale: 2.0}
    """)
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="it is an option of ast_film_soft"):
        load_config(tmp_path / "c.yaml")



def test_ls_keys_set_on_the_command_line_keep_their_ls_meaning():
    """--set speaks ls: an override is never re-read as the original would have read it."""
    path = FIXTURES / "ast_film_soft_config.yaml"
    cfg = load_quietly(path, ["training.early_stopping=3", "models.ast_film_soft.mask_temperature=0.5",
                              "training.optimizer.mask_lr_scale=2.0", "models.ast_film_soft.debug_film=true"])
    assert cfg.training.early_stopping == 3 and cfg.training.optimizer.mask_lr_scale == 2.0
    assert cfg.model("ast_film_soft").mask_temperature == 0.5
    notes = notes_of(cfg)
    assert "training.early_stopping" not in notes and "training.optimizer.mask_lr_scale" not in notes
    assert notes["training.mask_temperature"] == "ignored"  # replaced by the --set
    assert notes["models.ast_film_soft.debug_film"] == "ignored"  # not an ls key: still the original's
    # an original key given with --set is translated like the file's
    cfg = load_quietly(path, ["models.ast_film_soft.audioset_ckpt_path=/w/other.pth"])
    assert cfg.model("ast_film_soft").weights.path == "/w/other.pth"
