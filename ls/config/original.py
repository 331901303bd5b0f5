"""Configs written for the original implementation: recognised, read with the meaning they had there, reported.

The original's run configs use keys ls does not have (``audioset_pretrain``, ``dropout_p``,
``training.hardware``, ...), keys its code never read, and keys whose effect depended on other keys or on
where they were written (a model key read from the model block, its copy under ``training`` ignored, or the
reverse). :func:`translate` rewrites such a config into ls keys with the meaning the original gave it and
records one :class:`Note` per key it translated or ignored, or per absent key it filled with the original's
default. ``docs/original_configs.md`` has the whole table.

A file is in the original's format when it holds one of the keys that only that format has
(:data:`MARKERS`: every model block of the original's configs has ``name`` and ``audioset_pretrain``);
other files are left alone, so ls's own validation (unknown keys are errors) is unchanged for them.
``ls.config.config_from_dict`` calls :func:`translate` on every config and warns once with
:meth:`Translation.report`; in strict mode (``strict_config: true``, ``--strict-config``) every note is an
error instead.

Torch-free, and it does not import ``ls.config`` itself (which imports this module).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ls.config.loader import BuildContext
from ls.engine.config import TrainingConfig
from ls.models.variants import get_variant


class OriginalConfigWarning(UserWarning):
    """A config in the original implementation's format was translated; the message lists every key."""


Action = Literal["translated", "ignored", "default"]


def show(value: Any) -> str:
    """A value as it would be written in YAML (flow style, one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False)
    return text.removesuffix("...\n").strip()


@dataclass(frozen=True)
class Note:
    """What became of one key of an original config.

    ``key`` is the dotted key as the file (or a ``--set``) wrote it; ``target`` the ls key it became (None when
    ignored); ``value`` what the file said and ``new`` what ls uses. ``default`` notes are about an absent key
    whose default in the original differs from ls's: ``key`` and ``target`` are then the ls key.
    """

    key: str
    action: Action
    reason: str
    value: Any = None
    target: str | None = None
    new: Any = None
    moved: bool = True  # the value moved from key to target; false: key decided target's value (training.n_cls)

    def line(self) -> str:
        if self.action == "ignored":
            return f"{self.key}: ignored, {self.reason}"
        if self.action == "default":
            return f"{self.target}: {show(self.new)} ({self.reason})"
        return f"{self.key}: {show(self.value)} -> {self.target}: {show(self.new)} ({self.reason})"

    def strict_error(self) -> str:
        if self.action == "ignored":
            what = f"ls would ignore it: {self.reason}"
        elif self.action == "default":
            what = f"absent, so ls would set {self.target}: {show(self.new)} ({self.reason})"
        else:
            what = f"ls would read it as {self.target}: {show(self.new)} ({self.reason})"
        return (f"written for the original implementation: {what}; strict_config (--strict-config) accepts only "
                "ls's keys (python -m ls.config.migrate writes them)")


@dataclass
class Translation:
    """Every :class:`Note` of one config; empty (``original`` false) for a config in ls's own format."""

    source: str
    markers: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def original(self) -> bool:
        """The config was recognised as the original implementation's format."""
        return bool(self.markers)

    def add(self, key: str, action: Action, reason: str, value: Any = None, target: str | None = None,
            new: Any = None, moved: bool = True) -> None:
        self.notes.append(Note(key, action, reason, value, target, new, moved))

    def summary(self) -> str:
        """One line: which keys were translated (to what) and which ignored (an MLflow tag of the run)."""
        parts = []
        for action, fmt in (("translated", "{n.key} -> {n.target}"), ("default", "{n.target}"),
                            ("ignored", "{n.key}")):
            keys = [fmt.format(n=n) for n in self.notes if n.action == action]
            if keys:
                parts.append(f"{action}: {', '.join(keys)}")
        return "; ".join(parts)

    def report(self) -> str:
        """The warning of a run: each translated and each ignored key, with why."""
        if not self.notes:
            return ""
        groups = [("translated", [n for n in self.notes if n.action == "translated"]),
                  ("absent, set to the original's default", [n for n in self.notes if n.action == "default"]),
                  ("ignored (no effect in the original)", [n for n in self.notes if n.action == "ignored"])]
        counts = {a: sum(n.action == a for n in self.notes) for a in ("translated", "ignored")}
        head = (f"{self.source} is written for the original implementation; ls reads it with the meaning it had "
                f"there ({counts['translated']} keys translated, {counts['ignored']} ignored):")
        lines = [head]
        for title, notes in groups:
            if notes:
                lines.append(f"  {title}:")
                lines += [f"    {n.line()}" for n in notes]
        lines.append(f"  `python -m ls.config.migrate {self.source} > NEW.yaml` writes it in ls's keys; "
                     "--strict-config (or strict_config: true) makes this an error.")
        return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------
# The original's format
# -------------------------------------------------------------------------------------------------------------
#: How the original named each variant's model block (its builder's keys).
ORIGINAL_NAMES = {"ast": "ast", "ast_fus": "ast_meta_proj", "ast_film": "ast_film", "ast_tafilm": "tafilm",
                  "ast_film_soft": "ast_film_soft"}

_WEIGHT_KEYS = ("audioset_pretrain", "imagenet_pretrain", "audioset_ckpt_path")
_AST_KEYS = frozenset({"label_dim", "fstride", "tstride", "input_fdim", "input_tdim", "model_size", *_WEIGHT_KEYS})
_METADATA_KEYS = frozenset({"dev_emb_dim", "site_emb_dim", "use_device", "use_site", "use_continuous"})
_FILM_KEYS = frozenset({"dev_emb_dim", "site_emb_dim", "metadata_hidden_dim", "film_hidden_dim",
                        "conditioned_layers"})

#: Per variant, the keys of ``models.<block>`` the original's model builder read.
READ: dict[str, frozenset[str]] = {
    "ast": _AST_KEYS | {"verbose", "dropout"},
    "ast_fus": _AST_KEYS | _METADATA_KEYS | {"verbose", "dropout", "dropout_p", "hidden_dim", "init_gate",
                                             "use_missing_flags"},
    "ast_film": _AST_KEYS | _METADATA_KEYS | _FILM_KEYS | {
        "verbose", "dropout", "dropout_p", "debug_film", "use_improved_continuous_encoder",
        "layer_specific_encoding"},
    "ast_tafilm": _AST_KEYS | _METADATA_KEYS | _FILM_KEYS | {"dropout", "debug", "use_improved_continuous_encoder"},
    "ast_film_soft": _AST_KEYS | _FILM_KEYS | {
        "dropout", "debug_film", "mask_init_scale", "mask_sparsity_lambda", "mask_coverage_lambda",
        "per_layer_masks", "mask_temperature", "film_init_gain"},
}
#: Every key the original's model blocks could hold (its configs, its builder, its dataclass).
MODEL_KEYS: frozenset[str] = frozenset().union(*READ.values()) | {
    "name", "backbone_only", "use_missing_flags", "mask_temperature_end", "mask_temperature_warmup",
    "mask_lr_multiplier"}

#: Keys only the original's format has: one of them makes a file an original config.
MARKERS: dict[str, frozenset[str]] = {
    "models.*": frozenset({"name", "audioset_pretrain", "imagenet_pretrain", "audioset_ckpt_path", "dropout_p",
                           "debug_film", "debug", "verbose", "backbone_only", "use_missing_flags",
                           "mask_lr_multiplier"}),
    "training": frozenset({"hardware", "kfold_splits", "binary_mode"}),
}

#: Where the builder's default, used when the block leaves the key out, differs from ls's:
#: variant -> [(original key, ls key, value)].
BUILDER_DEFAULTS: dict[str, list[tuple[str, str, Any]]] = {
    "ast": [("dropout", "dropout", 0.0)],
    "ast_fus": [("dropout_p", "dropout", 0.3), ("hidden_dim", "head_hidden_dim", 64)],
    "ast_tafilm": [("dropout", "dropout", 0.3), ("conditioned_layers", "conditioned_layers", [10, 11])],
    "ast_film_soft": [("dropout", "dropout", 0.3)],
}

_MODEL_REASONS = {
    "name": "unused in the original (the block's key names the model)",
    "verbose": "it only made the original print more",
    "debug": "it only made the original print diagnostics",
    "debug_film": "it only made the original print diagnostics",
    "mask_lr_multiplier": "never read by the original (its mask learning rate was training.optimizer."
                          "mask_lr_scale, applied only under use_differential_lr)",
    "mask_temperature_end": "the original's temperature schedule read training.mask_temperature_end",
    "mask_temperature_warmup": "the original's temperature schedule read training.mask_temperature_warmup",
}

_TRAINING_IGNORED = {
    "hardware": "use torchrun to train on several GPUs and CUDA_VISIBLE_DEVICES to choose them "
                "(training.device: auto | cpu | cuda)",
    "kfold_splits": "use --kfold K (the original's root scripts never ran k-fold)",
    "early_stopping": "the original never stopped early, it ran every epoch (ls's training.early_stopping "
                      "would stop)",
    "grad_clip": "the original always clipped the gradient norm at 1.0, ls's default",
    "alpha": "never read by the original's training scripts (they have no focal loss)",
    "gamma": "never read by the original's training scripts (they have no focal loss)",
    "use_class_weights": "never read by the original's training scripts",
}

_SCHEDULE_KEYS = ("mask_temperature", "mask_temperature_end", "mask_temperature_warmup")
#: Losses of the original's multi-label mode; it trained any other name as BCE (ast_train.py refused it).
_MULTILABEL_LOSSES = ("bce", "default", "hierarchical", "composite", "asymmetric")

#: AudioSet log-mel statistics (``ls.data.features.AUDIOSET_MEAN`` / ``AUDIOSET_STD``; not imported: torch).
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974


def original_markers(data: dict) -> list[str]:
    """The keys of ``data`` that only the original's format has (empty: an ls config)."""
    found = []
    models = data.get("models")
    if isinstance(models, dict):
        for name, block in models.items():
            if isinstance(block, dict) and _variant(name) in READ:
                found += [f"models.{name}.{k}" for k in block if k in MARKERS["models.*"]]
    training = data.get("training")
    if isinstance(training, dict):
        found += [f"training.{k}" for k in training if k in MARKERS["training"]]
    return found


def _variant(name: Any) -> str | None:
    try:
        return get_variant(str(name)).name
    except ValueError:
        return None


def _accepted(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "__aliases__", {}))


class _Bad(ValueError):
    pass


def _flag(value: Any) -> bool:
    """A YAML boolean of the original (true/false, 0/1, 'true'/'false')."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return value.lower() in ("true", "yes", "on")
    raise _Bad(f"expected true/false, got {value!r}")


# -------------------------------------------------------------------------------------------------------------
# Translation
# -------------------------------------------------------------------------------------------------------------
def translate(data: dict, ctx: BuildContext) -> tuple[dict, Translation]:
    """``data`` in ls's keys, with the meaning the original gave it, and the notes saying what changed.

    A config without :data:`MARKERS` is returned as it is, with no notes. Problems (a value of the wrong type,
    a key given both in the original's and in ls's form) are recorded in ``ctx``. ``data`` is not modified.
    """
    result = Translation(ctx.source, original_markers(data))
    if not result.original:
        return data, result
    data = copy.deepcopy(data)
    _Translator(data, ctx, result).run()
    return data, result


class _Translator:
    def __init__(self, data: dict, ctx: BuildContext, out: Translation) -> None:
        self.data, self.ctx, self.out = data, ctx, out
        models = data.get("models")
        self.blocks: dict[str, tuple[str, dict]] = {}  # written name -> (variant, block)
        if isinstance(models, dict):
            for name, block in models.items():
                variant = _variant(name)
                if variant in READ and isinstance(block, dict):
                    self.blocks[str(name)] = (variant, block)
        training = data.get("training")
        self.training = training if isinstance(training, dict) else None

    def run(self) -> None:
        for name, (variant, block) in self.blocks.items():
            self.model_block(name, variant, block)
        if self.training is not None:
            self.training_section(self.training)
            self.precision(self.training)
        self.output_mode()
        self.audio()
        mlflow = self.data.get("mlflow")
        if mlflow and not self._overridden("mlflow"):  # an empty section is what every original config has
            self.data.pop("mlflow")
            self.out.add("mlflow", "ignored", "the original's scripts read tracking settings only from "
                         "--mlflow-config (pass the file there)", mlflow)

    def _overridden(self, dotted: str) -> bool:
        return any(dotted == k or k.startswith(dotted + ".") for k in self.ctx.overrides)

    def _section(self, name: str) -> dict | None:
        section = self.data.get(name)
        if section is None:
            section = self.data[name] = {}
        return section if isinstance(section, dict) else None

    # -- models ----------------------------------------------------------------------------------------------
    def model_block(self, name: str, variant: str, block: dict) -> None:
        prefix = f"models.{name}"
        original = ORIGINAL_NAMES[variant]
        self.weights(prefix, block)
        if "dropout_p" in READ[variant]:
            self.dropout_p(prefix, original, block)
        schedule_in_training = self.training is not None and "mask_temperature" in self.training
        known = _accepted(get_variant(variant).options)
        for key in [k for k in block if k in MODEL_KEYS]:
            dotted = f"{prefix}.{key}"
            if key in known and self._overridden(dotted):
                continue  # an ls key given with --set means what it means in ls
            if key not in READ[variant]:
                reason = _MODEL_REASONS.get(key) or f"not read by the original's builder for `{original}`"
                if key == "dropout_p":
                    reason += " (it used dropout)"
                self.out.add(dotted, "ignored", reason, block.pop(key))
            elif key == "use_missing_flags":  # GRF
                self.missing_flags(dotted, block.pop(key))
            elif key in ("verbose", "debug", "debug_film"):
                self.out.add(dotted, "ignored", _MODEL_REASONS[key], block.pop(key))
            elif key == "mask_temperature" and schedule_in_training:
                self.out.add(dotted, "ignored", "the original's schedule set the temperature from "
                             "training.mask_temperature before the first epoch", block.pop(key))
        for original_key, ls_key, value in BUILDER_DEFAULTS.get(variant, []):
            if original_key not in block and ls_key not in block and ls_key in known:
                block[ls_key] = copy.deepcopy(value)
                self.out.add(f"{prefix}.{ls_key}", "default", f"absent; the original's builder used {show(value)} "
                             f"for `{original}`", target=f"{prefix}.{ls_key}", new=value)

    def dropout_p(self, prefix: str, original: str, block: dict) -> None:
        """GRF and FiLM: the classifier (and metadata encoder) dropout is ``dropout_p``; their ``dropout`` only
        reached the head of the inner AST, which they never use."""
        if "dropout" in block and not self._overridden(f"{prefix}.dropout"):
            self.out.add(f"{prefix}.dropout", "ignored", f"`{original}`'s classifier used dropout_p; dropout "
                         "reached only the inner AST's unused head", block.pop("dropout"))
        if "dropout_p" not in block:
            return  # absent: the builder's default (BUILDER_DEFAULTS)
        value = block.pop("dropout_p")
        if "dropout" in block:  # --set models.<v>.dropout wins
            override = self.ctx.overrides.get(f"{prefix}.dropout")
            self.out.add(f"{prefix}.dropout_p", "ignored", f"replaced by --set {override}", value)
            return
        block["dropout"] = value
        self.ctx.alias_of[f"{prefix}.dropout"] = f"{prefix}.dropout_p"
        self.out.add(f"{prefix}.dropout_p", "translated", f"`{original}`'s classifier and metadata dropout", value,
                     f"{prefix}.dropout", value)

    def weights(self, prefix: str, block: dict) -> None:
        """``audioset_pretrain`` / ``imagenet_pretrain`` / ``audioset_ckpt_path`` -> ``weights``."""
        given = {k: block.pop(k) for k in _WEIGHT_KEYS if k in block}
        if not given and "weights" in block:
            return  # the block says it in ls's keys
        flags = {}
        for key in ("audioset_pretrain", "imagenet_pretrain"):
            try:  # the builder's default when absent: true
                flags[key] = _flag(given.get(key, True))
            except _Bad as exc:
                self.ctx.error(f"{prefix}.{key}", str(exc))
                return
        path = given.get("audioset_ckpt_path")
        if flags["audioset_pretrain"]:
            source = "audioset"
            why = {"audioset_pretrain": "the original AST AudioSet checkpoint",
                   "imagenet_pretrain": "with audioset_pretrain the AudioSet checkpoint replaces the ImageNet weights"}
            if not flags["imagenet_pretrain"]:
                why["imagenet_pretrain"] = "the original refused audioset_pretrain without it; ls loads the AudioSet "\
                    "checkpoint, which holds the whole backbone"
        elif flags["imagenet_pretrain"]:
            source = "imagenet"
            text = ("ImageNet DeiT weights, which the original downloaded at run time; ls never downloads: set "
                    "weights.path to the DeiT file (README, 'Pretrained weights')")
            why = {"audioset_pretrain": text, "imagenet_pretrain": text}
        else:
            source = "none"
            why = {"audioset_pretrain": "random initialisation", "imagenet_pretrain": "random initialisation"}
        translated = {"source": source}
        if source == "audioset" and path not in (None, ""):
            translated["path"] = str(path)
        existing = block.get("weights")
        if existing is not None:
            if not (isinstance(existing, dict) and self._overridden(f"{prefix}.weights")):
                self.ctx.error(f"{prefix}.weights", "given twice: as weights and as "
                               f"{', '.join(given) or 'the original default audioset_pretrain: true'}")
                return
            translated.update(existing)  # --set models.<v>.weights.* wins over the file
        block["weights"] = translated
        for key in ("audioset_pretrain", "imagenet_pretrain"):
            if key in given:
                self.out.add(f"{prefix}.{key}", "translated", why[key], given[key], f"{prefix}.weights.source",
                             translated["source"])
        if "audioset_pretrain" not in given and "imagenet_pretrain" not in given:
            self.out.add(f"{prefix}.weights.source", "default", "absent; the original's builder loaded the AudioSet "
                         "checkpoint (audioset_pretrain: true)", target=f"{prefix}.weights.source", new=source)
        if "audioset_ckpt_path" in given:
            if source == "audioset":
                self.out.add(f"{prefix}.audioset_ckpt_path", "translated", "the AudioSet checkpoint file", path,
                             f"{prefix}.weights.path", translated.get("path"))
                self.ctx.alias_of[f"{prefix}.weights.path"] = f"{prefix}.audioset_ckpt_path"
            else:
                self.out.add(f"{prefix}.audioset_ckpt_path", "ignored", "the original read it only with "
                             "audioset_pretrain: true", path)

    def missing_flags(self, dotted: str, value: Any) -> None:
        dataset = self._section("dataset")
        if dataset is None:
            return
        if "use_missing_flags" in dataset and dataset["use_missing_flags"] != value:
            self.ctx.error(dotted, f"is {value!r} but dataset.use_missing_flags is {dataset['use_missing_flags']!r}; "
                           "keep one")
            return
        dataset["use_missing_flags"] = value
        self.ctx.alias_of["dataset.use_missing_flags"] = dotted
        self.out.add(dotted, "translated", "ls feeds the age/BMI missing flags from the data; the original's "
                     "dataset never emitted them (docs/fixes.md 11.2-3)", value, "dataset.use_missing_flags", value)

    # -- training ----------------------------------------------------------------------------------------------
    def training_section(self, training: dict) -> None:
        known = _accepted(TrainingConfig)
        for key in list(training):
            dotted = f"training.{key}"
            if key in known and self._overridden(dotted):
                continue  # an ls key given with --set means what it means in ls
            if key in _TRAINING_IGNORED:
                self.out.add(dotted, "ignored", _TRAINING_IGNORED[key], training.pop(key))
            elif key in _SCHEDULE_KEYS:
                self.schedule_key(key, training.pop(key))
            elif key in MODEL_KEYS and key not in known:
                self.model_copy(key, training.pop(key))
        optimizer = training.get("optimizer")
        if isinstance(optimizer, dict):
            self.optimizer(optimizer)

    def precision(self, training: dict) -> None:
        """The original's scripts trained under fp16 autocast with a GradScaler on CUDA, whatever the GPU; ls's
        ``auto`` would choose bf16 on an A100/H100. On CPU ls trains in fp32 under any setting (the original
        autocast to bf16 there, hundreds of times slower on the CPUs ls is tested on)."""
        if "amp" in training or self._overridden("training.amp"):
            return  # an ls key: it keeps its ls meaning
        training["amp"] = "fp16"
        self.out.add("training.amp", "default", "absent; the original trained under fp16 autocast with a "
                     "gradient scaler on CUDA (ls's auto would be bf16 on an A100/H100); fp32 on CPU",
                     target="training.amp", new="fp16")

    def schedule_key(self, key: str, value: Any) -> None:
        targets = [(name, block) for name, (variant, block) in self.blocks.items()
                   if key in _accepted(get_variant(variant).options)]
        if not targets:
            self.out.add(f"training.{key}", "ignored", "only SoftFiLM's temperature schedule reads it", value)
            return
        for name, block in targets:
            if self._overridden(f"models.{name}.{key}"):
                self.out.add(f"training.{key}", "ignored", f"replaced by --set "
                             f"{self.ctx.overrides.get(f'models.{name}.{key}')}", value)
                continue
            block[key] = value
            self.ctx.alias_of[f"models.{name}.{key}"] = f"training.{key}"
            self.out.add(f"training.{key}", "translated", "the original's SoftFiLM schedule read it from training",
                         value, f"models.{name}.{key}", value)

    def model_copy(self, key: str, value: Any) -> None:
        """SoftFiLM's config repeats model keys under ``training``; the original read only the model block's."""
        holders = {name: block[key] for name, (_, block) in self.blocks.items() if key in block}
        reason = "a copy of a model key; the original read the model block's"
        if key in _MODEL_REASONS:
            reason = f"a copy of a model key, {_MODEL_REASONS[key]}"
        elif holders:
            reason += " (" + ", ".join(f"models.{name}.{key}: {show(v)}" for name, v in holders.items()) + ")"
        self.out.add(f"training.{key}", "ignored", reason, value)

    def optimizer(self, optimizer: dict) -> None:
        prefix = "training.optimizer"

        def given(key: str) -> bool:  # in the file, and not an ls key set with --set (which keeps its ls meaning)
            return key in optimizer and not self._overridden(f"{prefix}.{key}")

        if given("type") and str(optimizer["type"]).lower() != "adamw":
            self.out.add(f"{prefix}.type", "ignored", "the original always used AdamW", optimizer.pop("type"))
        for key in ("betas", "momentum"):
            if given(key):
                self.out.add(f"{prefix}.{key}", "ignored", "the original's AdamW used torch's defaults "
                             "(betas 0.9, 0.999)", optimizer.pop(key))
        if given("mask_lr_multiplier"):
            self.out.add(f"{prefix}.mask_lr_multiplier", "ignored", _MODEL_REASONS["mask_lr_multiplier"],
                         optimizer.pop("mask_lr_multiplier"))
        try:
            differential = _flag(optimizer.get("use_differential_lr", False))
        except _Bad as exc:
            self.ctx.error(f"{prefix}.use_differential_lr", str(exc))
            return
        if given("mask_lr_scale") and not differential:
            self.out.add(f"{prefix}.mask_lr_scale", "ignored", "the original applied it only under "
                         "use_differential_lr, which is off (ls would apply it)", optimizer.pop("mask_lr_scale"))

    # -- output mode, loss ---------------------------------------------------------------------------------------
    def output_mode(self) -> None:
        """The original's training loop chose binary iff ``training.n_cls == 2`` (or ``binary_mode``), else
        multi-label; without a training section (figures config) the models' ``label_dim`` says which."""
        training = self.training
        if training is not None:
            n_cls = training.pop("n_cls", None)
            binary_mode = training.pop("binary_mode", None)
            try:
                binary = n_cls == 2 or (binary_mode is not None and _flag(binary_mode))
            except _Bad as exc:
                self.ctx.error("training.binary_mode", str(exc))
                return
            mode = "binary, one sigmoid output" if binary else "multi-label, two sigmoid outputs"
            for key, value in (("n_cls", n_cls), ("binary_mode", binary_mode)):
                if value is not None:
                    self.out.add(f"training.{key}", "translated", f"it chose the original's training mode: {mode}",
                                 value, "dataset.n_cls", 2 if binary else 4, moved=False)
            why = f"training.n_cls {n_cls}" if binary_mode is None else "training.n_cls / binary_mode"
        else:
            dims = {block.get("label_dim") for _, block in self.blocks.values()}
            if dims not in ({1}, {2}):
                return
            binary = dims == {1}
            why = f"the models' label_dim {dims.pop()}"
        dataset = self._section("dataset")
        if dataset is None:
            return
        mode = "binary" if binary else "multi-label"
        for key, want, ls_default in (("n_cls", 2 if binary else 4, 4), ("multi_label", not binary, True)):
            had = dataset.get(key, ls_default)
            if had == want:
                continue
            if self._overridden(f"dataset.{key}"):
                continue  # a --set wins; ls checks it against the rest
            dataset[key] = want
            reason = f"the original ran {mode} from {why}"
            if key == "multi_label" and not binary and training is not None:
                reason += "; with multi_label false its labels did not fit the two outputs and the run failed"
            elif key == "multi_label" and not binary:
                reason += "; with multi_label false its figures merged the four classes into normal / abnormal"
            self.out.add(f"dataset.{key}", "translated", reason, had, f"dataset.{key}", want)
        if training is None:
            return
        loss = training.get("loss")
        if loss is None or self._overridden("training.loss"):
            return
        name = str(loss).strip().lower()
        if binary and name not in ("bce", "default"):
            training["loss"] = "bce"
            self.out.add("training.loss", "translated", "the original's binary mode always trained BCE", loss,
                         "training.loss", "bce")
        elif not binary and name not in _MULTILABEL_LOSSES:
            training["loss"] = "bce"
            self.out.add("training.loss", "translated", "the original's multi-label scripts trained an unknown "
                         "loss name as BCE (ast_train.py refused it)", loss, "training.loss", "bce")

    # -- audio -----------------------------------------------------------------------------------------------------
    def audio(self) -> None:
        audio = self.data.get("audio")
        if not isinstance(audio, dict):
            return
        norm = None if self._overridden("audio.mel_norm") else audio.get("mel_norm")
        if isinstance(norm, str) and norm.lower() == "hf":
            # the original's `hf` divided by one standard deviation; ls's `hf` divides by two, like `mit`
            audio.update(mel_norm="custom", custom_mean=AUDIOSET_MEAN, custom_std=AUDIOSET_STD)
            self.out.add("audio.mel_norm", "translated", "the original's `hf` was (x - AudioSet mean) / AudioSet "
                         f"std; ls's custom_mean {AUDIOSET_MEAN}, custom_std {AUDIOSET_STD} are that", norm,
                         "audio.mel_norm", "custom")
        elif isinstance(norm, str) and norm.lower() == "off":
            audio["mel_norm"] = "none"
            self.out.add("audio.mel_norm", "translated", "unnormalised log-mel", norm, "audio.mel_norm", "none")
        for section in ("wave_aug", "spec_aug"):
            entries = audio.get(section)
            if not isinstance(entries, list):
                continue
            for i, entry in enumerate(entries):
                p = entry.get("p") if isinstance(entry, dict) and not self._overridden(f"audio.{section}") else None
                if isinstance(p, (int, float)) and not isinstance(p, bool) and p != 0 and not 0 < p < 1:
                    entry["p"] = 0.0
                    self.out.add(f"audio.{section}[{i}].p", "translated", "the original dropped an augmentation "
                                 "whose p is not strictly between 0 and 1", p, f"audio.{section}[{i}].p", 0.0)


__all__ = [
    "BUILDER_DEFAULTS",
    "MARKERS",
    "MODEL_KEYS",
    "ORIGINAL_NAMES",
    "READ",
    "Note",
    "OriginalConfigWarning",
    "Translation",
    "original_markers",
    "translate",
]
