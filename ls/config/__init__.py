"""Typed configuration: YAML files load into the ``Config`` dataclass tree.

>>> cfg = load_config("configs/quickstart.yaml", overrides=["training.epochs=2"])
>>> cfg.dataset.batch_size

One key per fact: facts that several sections need are derived here, once, when a config is loaded, and a
value given for them elsewhere must agree. The model's input height is ``audio.n_mels`` (``dataset.h`` and
``models.<v>.input_fdim`` may repeat it), its input width is ``dataset.w`` (``input_tdim``), and its
``label_dim`` follows from the output mode (:attr:`Config.output_mode`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from ls.config.loader import (
    FAILED,
    BuildContext,
    ConfigError,
    _Bad,
    apply_overrides,
    build_section,
    builtin_configs,
    dump_yaml,
    flatten,
    read_yaml,
    resolve_config_path,
    to_dict,
)
from ls.config.original import OriginalConfigWarning, Translation, translate
from ls.data.config import AudioConfig, AugmentConfig, DatasetConfig
from ls.engine.config import MlflowConfig, TrainingConfig
from ls.models.options import ModelConfig, WeightsConfig
from ls.utils import plugins as _plugins
from ls.utils.fields import option


def _other_owners(key: str, variant: Any) -> str | None:
    """For an unknown key in a ``models.<variant>`` block: which variants do have it."""
    from ls.models.variants import variant_table

    owners = [v.name for v in variant_table().values()
              if key in {f.name for f in fields(v.options)} | set(getattr(v.options, "__aliases__", {}))]
    if owners:
        return (f"variant {variant.name} ({variant.display_name}) has no option '{key}'; it is an option of "
                f"{', '.join(owners)}")
    return None


def _build_models(value: Any, key: str, ctx: BuildContext) -> Any:
    """``models``: each block is read into the options class of its variant (the variant table decides)."""
    from ls.models.variants import get_variant

    if not isinstance(value, dict):
        raise _Bad(f"expected a mapping of variant blocks (models.<variant>: ...), got {value!r}")
    out: dict[str, ModelConfig] = {}
    seen: dict[str, str] = {}
    failed = False
    for name, block in value.items():
        dotted = f"{key}.{name}"
        try:
            variant = get_variant(str(name))
        except ValueError as exc:
            ctx.error(dotted, str(exc))
            failed = True
            continue
        if variant.name in seen:
            ctx.error(dotted, f"names the same variant as '{key}.{seen[variant.name]}'")
            failed = True
            continue
        seen[variant.name] = str(name)
        block = {} if block is None else block
        if not isinstance(block, dict):
            ctx.error(dotted, f"expected a mapping of options, got {block!r}")
            failed = True
            continue
        declared = block.get("variant")
        if declared:
            try:
                mismatch = get_variant(str(declared)).name != variant.name
            except ValueError:
                mismatch = True
            if mismatch:
                ctx.error(f"{dotted}.variant", f"{declared!r} does not match the block's key {name!r}")
                failed = True
                continue
        built = build_section(variant.options, block, dotted, ctx, lambda k, v=variant: _other_owners(k, v))
        if built is FAILED:
            failed = True
            continue
        built.variant = variant.name
        out[str(name)] = built
    return FAILED if failed else out


@dataclass
class Config:
    """The whole resolved configuration of a run."""

    dataset: DatasetConfig = option(help="data location, splits, labels, batching, feature cache, metadata encoder")
    seed: int = option(42, "seed of the run: data order, augmentation, dropout and initialisation follow from it")
    audio: AudioConfig = option(AudioConfig, "waveform processing, log-mel features, normalisation, augmentation")
    models: dict[str, ModelConfig] = option({}, "one block per variant, `models.<variant>` (see below)")
    training: TrainingConfig = option(TrainingConfig, "loss, thresholds, optimiser, schedules, selection, device")
    mlflow: MlflowConfig | None = option(
        None, "tracking settings (also from `--mlflow-config` or `MLFLOW_*` variables)")
    strict_config: bool = option(
        False, "only ls keys: a config in the original implementation's format is an error instead of being "
        "translated with a warning (also --strict-config; docs/original_configs.md)")
    plugins: list[str] = option(
        [], "plugin modules the config needs (a mechanism's or a reader's), imported before the rest of it is "
        "read, as `-p MODULE` would; they join `LS_PLUGINS` for the processes a run starts (docs/interfaces.md)")

    __builders__: ClassVar[dict[str, Any]] = {"models": _build_models}

    @property
    def translation(self) -> Translation:
        """What was translated from the original implementation's format when this config was loaded (no notes
        for a config written in ls's keys). Not a config key: it is neither dumped nor logged as a param."""
        return self.__dict__.get("_translation") or Translation(source="")

    def model(self, variant: str) -> ModelConfig:
        """The ``models.<variant>`` block (aliases such as ``tafilm`` or ``ast_meta_proj`` accepted)."""
        from ls.models.variants import canonical_variant

        want = canonical_variant(variant)
        for cfg in self.models.values():
            if cfg.variant == want:
                return cfg
        have = ", ".join(self.models) or "none"
        raise ConfigError(f"config has no 'models.{variant}' block (blocks present: {have})")

    @property
    def output_mode(self) -> Any:
        """How logits become predictions (``ls.engine.modes.OutputMode``): from the dataset's task and the loss."""
        from ls.data.tasks import get_task
        from ls.engine.modes import resolve_output_mode

        classes = get_task(self.dataset.task, self.dataset.classes).classes
        return resolve_output_mode(self.dataset.n_cls, self.dataset.multi_label, self.training.loss,
                                   class_names=classes)


#: Keys of ls 0.1 configs that moved into the SoftFiLM options (the mechanism owns its schedule).
_MOVED_TO_SOFTFILM = ("mask_temperature", "mask_temperature_end", "mask_temperature_warmup")


def _translate_moved_keys(data: dict, ctx: BuildContext) -> dict:
    """``training.mask_temperature*`` (ls 0.1) -> the same key in every block whose options have it."""
    training = data.get("training")
    if not isinstance(training, dict) or not any(k in training for k in _MOVED_TO_SOFTFILM):
        return data
    from ls.models.variants import get_variant

    data = {**data, "training": dict(training)}
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    moved = {k: data["training"].pop(k) for k in _MOVED_TO_SOFTFILM if k in data["training"]}
    new_models = {}
    for name, block in models.items():
        try:
            options = {f.name for f in fields(get_variant(str(name)).options)}
        except ValueError:
            options = set()
        if isinstance(block, dict) and set(moved) <= options:
            block = dict(block)
            for k, v in moved.items():
                if k in block and block[k] != v:
                    ctx.error(f"training.{k}", f"is {v!r} but models.{name}.{k} is {block[k]!r}; the "
                              f"schedule is an option of the model now: keep only models.{name}.{k}")
                block.setdefault(k, v)
        new_models[name] = block
    if models:
        data["models"] = new_models
    return data


def _resolve(cfg: Config, ctx: BuildContext) -> None:
    """Derive the facts several sections share (input size, label_dim) and check values given for them."""
    n_mels = cfg.audio.n_mels
    if cfg.dataset.h is None:
        cfg.dataset.h = n_mels
    elif cfg.dataset.h != n_mels:
        ctx.error("dataset.h", f"is {cfg.dataset.h} but audio.n_mels is {n_mels}: the frequency axis is never "
                  "resized, leave dataset.h out (it follows audio.n_mels)")
    if cfg.training.loss is None:
        cfg.training.loss = "bce" if cfg.dataset.multi_label or cfg.dataset.n_cls == 2 else "ce"
    try:
        mode = cfg.output_mode
    except ValueError as exc:
        ctx.note(f"output mode in {ctx.source}: {exc}")
        return
    if cfg.training.n_cls is not None and cfg.training.n_cls != cfg.dataset.n_cls:
        ctx.error("training.n_cls", f"is {cfg.training.n_cls} but dataset.n_cls is {cfg.dataset.n_cls}; leave "
                  "training.n_cls out (dataset.n_cls decides)")
    for name, model in cfg.models.items():
        for key, want, origin in (("input_fdim", n_mels, "audio.n_mels"), ("input_tdim", cfg.dataset.w, "dataset.w")):
            given = getattr(model, key)
            if given is None:
                setattr(model, key, want)
            elif given != want:
                ctx.error(f"models.{name}.{key}", f"is {given} but {origin} is {want}: the model takes the "
                          f"features as they are; leave {key} out (it follows {origin})")
        if model.label_dim is None:
            model.label_dim = mode.label_dim
        elif model.label_dim != mode.label_dim:
            ctx.error(f"models.{name}.label_dim",
                      f"is {model.label_dim} but the output mode is {mode.kind} with {mode.label_dim} logit(s) "
                      f"(dataset.n_cls {cfg.dataset.n_cls}, multi_label {cfg.dataset.multi_label}, training.loss "
                      f"{cfg.training.loss!r}); leave label_dim out (it follows from those)")


def load_config_plugins(data: dict, source: str) -> list[Any]:
    """Load the plugin modules of a raw config's top-level ``plugins`` key (``source`` names where the key
    came from); returns the loaded ``ls.utils.plugins.Plugin``s. Raises ConfigError naming the key."""
    names = data.get("plugins") if isinstance(data, dict) else None
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"'plugins' in {source}: expected a list of module names, e.g. [my_package.ls_plugin], "
                          f"got {names!r}")
    try:
        return _plugins.load(names, f"plugins: in {source}")
    except _plugins.PluginError as exc:
        raise ConfigError(str(exc)) from exc


def build_config(data: dict, source: str = "<dict>", overrides: list[str] | None = None, *,
                 strict: bool | None = None, load_plugins: bool = True) -> tuple[Config, BuildContext]:
    """:func:`config_from_dict` without the warning, also returning the build context (``alias_of`` says which
    typed keys were written under another name; ``ls.config.migrate`` uses it)."""
    data, provenance = apply_overrides(dict(data), overrides)
    ctx = BuildContext(source, provenance)
    # Before the variant and reader tables are read: the pending plugins (entry points, LS_PLUGINS; a broken one
    # is one error here, not one per section) and those the config names.
    _plugins.load_pending()
    if load_plugins:
        load_config_plugins(data, ctx._origin("plugins"))
    data, translation = translate(data, ctx)  # the original implementation's format -> ls keys
    data = _translate_moved_keys(data, ctx)
    cfg = build_section(Config, data, "", ctx)
    if cfg is not FAILED:
        _resolve(cfg, ctx)
    if strict or (cfg.strict_config if cfg is not FAILED else data.get("strict_config") is True):
        for note in translation.notes:  # the key as written: never shown under another key's name
            ctx.note(f"'{note.key}' in {ctx._origin(note.key)}: {note.strict_error()}")
    ctx.raise_if_any()
    cfg.__dict__["_translation"] = translation
    return cfg, ctx


def config_from_dict(data: dict, source: str = "<dict>", overrides: list[str] | None = None, *,
                     strict: bool | None = None, load_plugins: bool = True) -> Config:
    """Build a ``Config`` from a raw mapping (``overrides``: ``section.key=value`` strings); raises ``ConfigError``
    listing every problem.

    A config in the original implementation's format is read with the meaning it had there
    (:mod:`ls.config.original`): one :class:`~ls.config.original.OriginalConfigWarning` lists what was translated
    and ignored, also kept in ``cfg.translation``. ``strict`` (or the config's ``strict_config: true``) makes
    each of those keys an error instead. ``load_plugins=False`` leaves the modules of the ``plugins`` key
    unloaded: for a config stored with a checkpoint or run, which never imports code by itself
    (``ls.utils.plugins.require`` checks what it needs instead).
    """
    cfg, _ = build_config(data, source, overrides, strict=strict, load_plugins=load_plugins)
    if cfg.translation.notes:
        warnings.warn(OriginalConfigWarning(cfg.translation.report()), stacklevel=2)
    return cfg


#: Config keys (``section.key``; a trailing ``.`` covers a section) in which two configs of the same run may
#: differ: where things are written and logged, and how the work is spread; none changes what is trained. Shared
#: by every check that a stored run (finished or interrupted) is the run a config describes.
RUN_INDEPENDENT_KEYS = ("training.checkpoint_dir", "mlflow.", "training.device", "training.compile",
                        "dataset.num_workers", "dataset.cache_dir", "dataset.cache_workers", "plugins")


def run_view(config: dict[str, Any], variant: str) -> dict[str, Any]:
    """What a run of ``variant`` uses of a resolved config (a plain dict, as stored): every section, and of
    ``models`` only that variant's block, under its canonical name. The blocks of other variants (also ones
    added to a study later) do not change the run."""
    from ls.models.variants import canonical_variant

    want = canonical_variant(variant)
    out = {k: v for k, v in config.items() if k != "models"}
    for name, block in (config.get("models") or {}).items():
        declared = block.get("variant") if isinstance(block, dict) else None
        try:
            same = canonical_variant(str(declared or name)) == want
        except ValueError:  # a block of a variant this ls does not know is not this run's
            same = False
        if same:
            out["models"] = {want: block}
            break
    return out


def config_differences(stored: dict[str, Any], planned: dict[str, Any], variant: str,
                       ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: stored X vs planned Y`` for every key (``section.key``) that both resolved configs (plain dicts)
    have and that makes two runs of ``variant`` different: :data:`RUN_INDEPENDENT_KEYS` and ``ignore`` aside,
    and of ``models`` only the variant's own block (:func:`run_view`). A key only one of them has is an option
    of another ls version: new options default to the earlier behaviour, so a run stored before them is still
    the same run. The one check of every "is this stored run the run this config describes" question (a
    study's finished and interrupted runs, a resume)."""
    skip = (*RUN_INDEPENDENT_KEYS, *ignore)
    old, new = flatten(run_view(stored, variant)), flatten(run_view(planned, variant))
    return [f"{k}: stored {old[k]!r} vs planned {new[k]!r}" for k in sorted(set(old) & set(new))
            if not k.startswith(skip) and old[k] != new[k]]


def load_config(path: str | Path, overrides: list[str] | None = None, *, strict: bool | None = None) -> Config:
    """Load a YAML config into the typed ``Config``; ``overrides`` are ``section.key=value`` strings.

    Unknown keys, missing required keys and wrong types raise ``ConfigError`` naming every bad key and where
    it came from (the file or the ``--set`` that wrote it). ``path`` may name a config shipped with ls instead
    of a file (``quickstart``, ``ast_film_soft``: :func:`builtin_configs`). A file of the original
    implementation is translated with one warning, or rejected under ``strict`` (see :func:`config_from_dict`).
    """
    path = resolve_config_path(path)  # a file, or the name of a built-in config (`quickstart`)
    cfg, _ = build_config(read_yaml(path), str(path), overrides, strict=strict)
    if cfg.translation.notes:
        warnings.warn(OriginalConfigWarning(cfg.translation.report()), stacklevel=2)
    return cfg


__all__ = [
    "RUN_INDEPENDENT_KEYS",
    "AudioConfig",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DatasetConfig",
    "MlflowConfig",
    "ModelConfig",
    "OriginalConfigWarning",
    "TrainingConfig",
    "Translation",
    "WeightsConfig",
    "build_config",
    "builtin_configs",
    "config_differences",
    "config_from_dict",
    "dump_yaml",
    "flatten",
    "load_config",
    "load_config_plugins",
    "resolve_config_path",
    "run_view",
    "to_dict",
]
