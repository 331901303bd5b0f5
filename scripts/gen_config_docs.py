"""Render docs/config.md (the configuration reference) from the typed config dataclasses.

    python scripts/gen_config_docs.py            # rewrite docs/config.md
    python scripts/gen_config_docs.py --check    # exit 1 if docs/config.md is stale (tests/test_docs.py does this)

Every key comes from ``dataclasses.fields`` of the ``ls.config.Config`` tree: its type (Literal choices listed), its
default, and its meaning taken from the comments beside or directly above the field in the source. Fields the
source leaves uncommented get the short text in ``FALLBACK`` below; a field with neither is listed with an empty
meaning and reported on stderr. Change a default or a comment in the dataclass, then rerun this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "config.md"

#: Meanings of fields that carry no comment in their dataclass (dotted key, with ``<variant>`` for models).
FALLBACK: dict[str, str] = {
    "dataset": "data location, splits, labels, batching, feature cache, metadata encoder",
    "audio": "waveform processing, log-mel features, normalisation and augmentation",
    "models": "one block per variant, `models.<variant>` (see below)",
    "training": "loss, thresholds, optimiser, schedules, freezing, selection, device",
    "mlflow": "tracking settings (also from `--mlflow-config` or `MLFLOW_*` variables)",
    "audio.dataset_std": "filled by build_datasets with `mel_norm: dataset` (see dataset_mean)",
    "audio.wave_aug[].p": "probability of applying the entry to an item (0: dropped, 1: always)",
    "models.<variant>.dev_emb_dim": "device embedding width",
    "models.<variant>.site_emb_dim": "auscultation-site embedding width",
    "models.<variant>.metadata_hidden_dim": "hidden width of the metadata MLPs",
    "models.<variant>.use_site": "ablation: use the auscultation site",
    "models.<variant>.use_continuous": "ablation: use the continuous features (age, BMI, duration)",
    "models.<variant>.init_gate": "GRF: initial value of the (unconstrained) fusion gate",
    "models.<variant>.per_layer_masks": "SoftFiLM: one mask set per conditioned layer instead of one shared set",
    "models.<variant>.mask_init_scale": "SoftFiLM: initial mask logits +-scale (each factor owns a third of D)",
    "training.focal_gamma": "focal: focusing exponent",
    "training.asymmetric_gamma_neg": "asymmetric loss: focusing exponent of negatives",
    "training.asymmetric_gamma_pos": "asymmetric loss: focusing exponent of positives",
    "training.asymmetric_clip": "asymmetric loss: lower bound of 1 - p inside the negatives' log",
    "training.mask_temperature_end": "SoftFiLM: temperature at the last epoch",
    "training.mask_temperature_warmup": "SoftFiLM: epochs at the initial temperature before the cosine decay",
    "training.device": "`auto` (CUDA if available), `cpu` or `cuda` (an error without a GPU)",
    "training.scheduler.reduce_mode": "reduce_on_plateau: null = from reduce_metric (loss: min, else max)",
    "training.thresholds.min_sensitivity": "tuned: sensitivity floor a grid point must meet; null: paper's",
    "seed": "seed of the run: data order, augmentation, dropout and initialisation are functions of it",
    # dataset
    "dataset.data_folder": "folder with the ICBHI recordings (`<stem>.wav` + `<stem>.txt`) and helper files",
    "dataset.name": "dataset name; only `icbhi` exists (validated, otherwise unused)",
    "dataset.class_split": "class definition; only `lungsound` (normal / crackle / wheeze / both) exists",
    "dataset.test_fold": "`foldwise` split: the patient fold used as test",
    "dataset.split_seed": "seed of the `random` patient-level split",
    "dataset.val_seed": "seed of the validation draw",
    "dataset.n_cls": "evaluation classes: 4 (normal, crackle, wheeze, both) or 2 (normal, abnormal)",
    "dataset.multi_label": "targets are the [crackle, wheeze] bits (needs n_cls 4 and label_dim 2)",
    "dataset.weighted_sampler": "class-weighted sampling with replacement of the training split",
    "dataset.batch_size": "training batch size (per process under DDP)",
    "dataset.eval_batch_size": "validation/test batch size; null: batch_size",
    "dataset.num_workers": "DataLoader worker processes",
    # audio
    "audio.sample_rate": "rate (Hz) every recording is resampled to",
    "audio.remove_dc": "subtract the mean of the whole recording",
    "audio.normalize": "divide each recording by its peak, max|x|",
    "audio.pad_type": "how a short cycle reaches desired_length: repeat it, or centred zero padding",
    "audio.use_fade": "linear cross-fades at the joins of repeat padding",
    "audio.fade_samples_ratio": "cross-fade length = sample_rate // this samples",
    "audio.n_mels": "mel bins of the Kaldi fbank (must equal dataset.h)",
    "audio.low_freq": "lowest mel filter frequency (Hz)",
    "audio.high_freq": "highest mel filter frequency (Hz)",
    "audio.window_type": "fbank analysis window (Kaldi name)",
    "audio.use_energy": "add the Kaldi energy coefficient",
    "audio.dither": "Kaldi dither amount (0: deterministic features)",
    "audio.custom_mean": "`mel_norm: custom`: mean subtracted from the log-mel",
    "audio.custom_std": "`mel_norm: custom`: divisor of the log-mel",
    "audio.resz": "reference key; only 1.0 is accepted (set dataset.h / dataset.w for the input size)",
    "audio.raw_augment": "apply wave_aug / spec_aug to the training split",
    "audio.wave_aug": "waveform augmentations (list of entries, see below), in order",
    "audio.spec_aug": "SpecAugment entries (list, see below)",
    # augmentation entries
    "audio.wave_aug[].type": "noise, speed, loudness, vtlp, pitch, crop (waveform) or SpecAugment (spectrogram)",
    "audio.wave_aug[].sampling_rate": "must equal audio.sample_rate when given (reference key)",
    "audio.wave_aug[].zone": "[start, end] fractions of the waveform the augmented segment lies in",
    "audio.wave_aug[].coverage": "fraction of the zone that is augmented",
    "audio.wave_aug[].color": "noise colour; only `white` is implemented",
    "audio.wave_aug[].factor": "[low, high] range of the factor (speed/loudness/vtlp) or semitones (pitch)",
    "audio.wave_aug[].fhi": "vtlp: boundary frequency (Hz) of the warp; null: 4800",
    "audio.wave_aug[].policy": "SpecAugment policy: LB, LD, SM, SS, icbhi_sup, icbhi_ast_sup (default)",
    "audio.wave_aug[].mask": "SpecAugment mask value: `zero` or `mean`",
    # models
    "models.<variant>.variant": "canonical variant name; filled from the key under `models:` when empty",
    "models.<variant>.label_dim": "logits per cycle: 2 (multi-label), 1 (binary) or n_cls (softmax)",
    "models.<variant>.model_size": "ViT/DeiT size of the AST backbone",
    "models.<variant>.input_fdim": "mel bins of the input (= dataset.h)",
    "models.<variant>.input_tdim": "frames of the input (= dataset.w)",
    "models.<variant>.fstride": "patch stride along frequency",
    "models.<variant>.tstride": "patch stride along time",
    "models.<variant>.weights": "pretrained weights (section below)",
    "models.<variant>.dropout": "classifier (and GRF projection) dropout; metadata encoders use half of it",
    "models.<variant>.head_hidden_dim": "`head: common`: hidden width of every variant's head",
    "models.<variant>.head_activation": "`head: common`: activation of every variant's head",
    "models.<variant>.weights.path": "local file or directory of the weights (required unless source is none)",
    # training
    "training.epochs": "training epochs",
    "training.thresholds": "decision thresholds of sigmoid outputs (section below)",
    "training.optimizer": "AdamW settings (section below)",
    "training.scheduler": "per-epoch LR schedule (section below)",
    "training.freeze": "backbone freezing (section below)",
    "training.grad_clip": "max gradient norm; null or 0: no clipping",
    "training.early_stopping": "stop after this many epochs without improvement; null: never",
    "training.selection": "`strict`: select epoch/thresholds on validation; `paper`: on test, as the original",
    "training.optimizer.type": "optimiser; only `adamw`",
    "training.optimizer.lr": "base learning rate",
    "training.optimizer.betas": "AdamW betas",
    "training.optimizer.eps": "AdamW epsilon",
    "training.optimizer.cosine_weight_decay": "anneal weight decay from weight_decay to final_weight_decay",
    "training.optimizer.final_weight_decay": "weight decay at the end of the cosine schedule",
    "training.optimizer.backbone_lr_scale": "differential LR: backbone group multiplier",
    "training.optimizer.embedding_lr_scale": "differential LR: metadata embedding group multiplier",
    "training.optimizer.encoder_lr_scale": "differential LR: metadata encoder group multiplier",
    "training.optimizer.film_lr_scale": "differential LR: FiLM generator / GRF gate group multiplier",
    "training.optimizer.mask_lr_scale": "differential LR: SoftFiLM mask group multiplier",
    "training.optimizer.classifier_lr_scale": "differential LR: classifier head multiplier",
    "training.scheduler.type": "LR schedule, stepped once per epoch",
    "training.scheduler.warmup_epochs": "linear warmup epochs (cosine_warmup*)",
    "training.scheduler.start_linear_warmup": "LR factor at the first warmup epoch",
    "training.scheduler.end_linear_warmup": "LR factor at the end of warmup",
    "training.scheduler.min_lr": "lowest LR of the cosine schedules (absolute)",
    "training.scheduler.T_0": "cosine_warmup_restarts: epochs of the first cycle",
    "training.scheduler.T_mult": "cosine_warmup_restarts: cycle length multiplier",
    "training.scheduler.reduce_factor": "reduce_on_plateau: LR multiplier on a plateau",
    "training.scheduler.reduce_patience": "reduce_on_plateau: epochs without improvement before reducing",
    "training.scheduler.reduce_min_lr": "reduce_on_plateau: lowest LR",
    "training.thresholds.mode": "`tuned`: grid search on the selection split each evaluation; `fixed`: value",
    "training.thresholds.fallback": "threshold used when no grid point meets min_sensitivity; null: paper's",
    "training.freeze.strategy": "none, all (patch/pos-embed/tokens/blocks), until_block, trainable_blocks",
    "training.freeze.until_block": "`until_block`: last frozen block (null: 9)",
    "training.freeze.trainable_blocks": "`trainable_blocks`: number of last blocks kept trainable (null: 2)",
    "training.freeze.freeze_film": "also freeze the metadata encoders, generators, masks and gate",
    # mlflow
    "mlflow.tracking_uri": "MLflow tracking URI; null: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db",
    "mlflow.tracking_username": "HTTP basic-auth user; null: MLFLOW_TRACKING_USERNAME",
    "mlflow.tracking_password": "HTTP basic-auth password; null: MLFLOW_TRACKING_PASSWORD",
}

#: Meanings used instead of the source comment (where that comment is a group heading, not about the field).
OVERRIDE: dict[str, str] = {
    "dataset.cont_features": "continuous metadata features in `cont` column order (subset of age, bmi, duration); "
    "the metadata encoder is fitted on the training split only",
}


# ----------------------------------------------------------------------------------------------- source


def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the class source: comment lines directly above a field plus its trailing one."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, str] = {}  # 1-based line -> comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    block: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if re.match(r"^ {4}def ", line):
            break
        if stripped.startswith("#") and line.startswith("    ") and not line.startswith("     "):
            block.append(comments.get(lineno, ""))
            continue
        m = re.match(r"^ {4}(\w+)\s*:", line)
        if m and m.group(1) in names:
            if block and block[0].startswith("--"):  # a "-- section --" header, not about this field
                block = []
            head = " ".join(block)
            tail = comments.get(lineno, "")
            if head and len(head.split()) <= 2 and not head.endswith("."):  # a short group label, e.g. "GRF"
                text = f"{head}: {tail}" if tail else head
            else:
                text = "; ".join(p for p in (head, tail) if p)
            out[m.group(1)] = re.sub(r"\s+", " ", text).strip()
        block = []
    return out


def first_paragraph(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # dataclass-generated signature, not a docstring
        return ""
    return " ".join(doc.split("\n\n")[0].split())


# ----------------------------------------------------------------------------------------------- rendering


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" if isinstance(a, str) else str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " \\| ".join(type_name(a) for a in args)
        return inner + " \\| null" if len(args) < len(get_args(tp)) else inner
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "**required**"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    return f"`{value}`"


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def table(cls: type, prefix: str, fallback_prefix: str, missing: list[str]) -> list[str]:
    hints = get_type_hints(cls)
    comments = field_comments(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{fallback_prefix}{f.name}"
        meaning = OVERRIDE.get(key) or comments.get(f.name) or FALLBACK.get(key, "")
        if re.fullmatch(r"\w+", meaning) and key in FALLBACK:  # only a group label such as "SoftFiLM"
            meaning = FALLBACK[key]
        if not meaning:
            missing.append(f"{prefix}{f.name}")
        rows.append(
            f"| `{prefix}{f.name}` | {type_name(hints[f.name])} | {default_text(f)} | {escape(meaning)} |"
        )
    aliases = getattr(cls, "__aliases__", {})
    if aliases:
        rows.append("")
        rows.append(
            "Accepted old key names: "
            + ", ".join(f"`{old}` = `{new}`" for old, new in sorted(aliases.items()))
            + "."
        )
    return rows


def render() -> tuple[str, list[str]]:
    """The Markdown text of docs/config.md and the keys that have no meaning text."""
    from ls.config import Config
    from ls.data.config import AudioConfig, AugmentConfig, DatasetConfig
    from ls.engine.config import (
        FreezeConfig,
        MlflowConfig,
        OptimizerConfig,
        SchedulerConfig,
        ThresholdConfig,
        TrainingConfig,
    )
    from ls.models.config import ModelConfig, WeightsConfig
    from ls.models.names import VARIANT_ALIASES, VARIANTS

    missing: list[str] = []
    sections: list[tuple[str, type, str, str, str]] = [
        # (title, dataclass, key prefix shown, fallback prefix, note)
        ("Top level", Config, "", "", "Sections of a config file; `seed` is the only top-level scalar."),
        ("`dataset`", DatasetConfig, "dataset.", "dataset.", ""),
        ("`audio`", AudioConfig, "audio.", "audio.", ""),
        (
            "`audio.wave_aug[]` / `audio.spec_aug[]` entries",
            AugmentConfig,
            "",
            "audio.wave_aug[].",
            "Each list entry is one augmentation; keys a type does not use are ignored.",
        ),
        (
            "`models.<variant>`",
            ModelConfig,
            "",
            "models.<variant>.",
            "One block per variant under `models:`; the key is the variant name ("
            + ", ".join(f"`{v}`" for v in VARIANTS)
            + "; aliases "
            + ", ".join(f"`{a}`" for a in sorted(VARIANT_ALIASES))
            + "). Keys below are relative to the block.",
        ),
        ("`models.<variant>.weights`", WeightsConfig, "weights.", "models.<variant>.weights.", ""),
        ("`training`", TrainingConfig, "training.", "training.", ""),
        ("`training.optimizer`", OptimizerConfig, "training.optimizer.", "training.optimizer.", ""),
        ("`training.scheduler`", SchedulerConfig, "training.scheduler.", "training.scheduler.", ""),
        ("`training.thresholds`", ThresholdConfig, "training.thresholds.", "training.thresholds.", ""),
        ("`training.freeze`", FreezeConfig, "training.freeze.", "training.freeze.", ""),
        ("`mlflow`", MlflowConfig, "mlflow.", "mlflow.", ""),
    ]
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from the config dataclasses; do not edit by hand. -->",
        "",
        "Every key of the typed config (`ls.config.load_config`), with its default and meaning. A YAML file only",
        "overrides these defaults; unknown keys and wrong types are errors that name the key and the file.",
        "Override any key on the command line with `--set section.key=value` (value parsed as YAML).",
        "Defaults live once, in the dataclass fields of `ls/data/config.py` (`dataset`, `audio`),",
        "`ls/models/config.py` (`models`), `ls/engine/config.py` (`training`, `mlflow`) and `ls/config/__init__.py`",
        "(top level). Fixes that change the paper's behaviour are options here; see [fixes.md](fixes.md).",
        "",
    ]
    for title, cls, prefix, fb_prefix, note in sections:
        out.append(f"## {title}")
        out.append("")
        intro = " ".join(x for x in (note, first_paragraph(cls)) if x)
        if intro:
            out.append(intro)
            out.append("")
        out.extend(table(cls, prefix, fb_prefix, missing))
        out.append("")
    return "\n".join(out).rstrip() + "\n", missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--check", action="store_true", help="exit 1 if docs/config.md differs from the dataclasses"
    )
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    text, missing = render()
    if missing:
        print("keys without a meaning (add a comment to the field): " + ", ".join(missing), file=sys.stderr)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
