"""Render docs/config.md (the configuration reference) from the typed config dataclasses.

    python scripts/gen_config_docs.py            # rewrite docs/config.md
    python scripts/gen_config_docs.py --check    # exit 1 if docs/config.md is stale (tests/test_docs.py does this)

Every key comes from ``dataclasses.fields`` of the ``ls.config.Config`` tree: its type (Literal choices listed),
its default, and its meaning, the help text declared beside the field (``ls.utils.fields.option``). The model
section has one table per options dataclass of the variant table (``ls.models.variants``). Change a default or a
help text in the dataclass, then rerun this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "config.md"


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
    from ls.utils.fields import field_default
    from ls.utils.trees import to_dict

    value = field_default(f)
    if value is dataclasses.MISSING:
        return "**required**"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return "the paper's (" + ", ".join(f"{e.type} p {e.p:g}" for e in value) + ")"
    value = to_dict(value)
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    return f"`{value}`"


def own_fields(cls: type, parent: type | None) -> list[dataclasses.Field]:
    """Fields of ``cls`` that ``parent`` lacks, or whose default ``cls`` changes."""
    if parent is None:
        return [f for f in dataclasses.fields(cls) if f.init]
    base = {f.name: f for f in dataclasses.fields(parent)}
    return [f for f in dataclasses.fields(cls) if f.init and (f.name not in base or default_text(f) !=
                                                               default_text(base[f.name]))]


def table(cls: type, prefix: str, missing: list[str], parent: type | None = None) -> list[str]:
    from ls.utils.fields import field_help

    hints = get_type_hints(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in own_fields(cls, parent):
        meaning = field_help(f)
        if not meaning:
            missing.append(f"{cls.__name__}.{f.name}")
        rows.append(f"| `{prefix}{f.name}` | {type_name(hints[f.name])} | {default_text(f)} | "
                    f"{meaning.replace('|', chr(92) + '|')} |")
    aliases = getattr(cls, "__aliases__", {})
    inherited = getattr(parent, "__aliases__", {}) if parent is not None else {}
    own = {old: new for old, new in aliases.items() if inherited.get(old) != new}
    if own:
        rows += ["", "Accepted old key names: " + ", ".join(f"`{old}` = `{new}`" for old, new in sorted(own.items()))
                 + "."]
    return rows


def variant_table() -> list[str]:
    from ls.models.variants import VARIANTS
    from ls.utils.plugins import origin

    rows = ["| variant | shown as | root script | options | paper head | aliases |", "|---|---|---|---|---|---|"]
    for v in [v for v in VARIANTS.values() if origin("variant", v.name) is None]:  # built into ls
        rows.append(f"| `{v.name}` | {v.display_name} | {f'`{v.script}`' if v.script else '-'} | "
                    f"`{v.options.__name__}` | {v.head.activation.upper()} / {v.head.hidden_dim} | "
                    f"{', '.join(f'`{a}`' for a in v.aliases) or '-'} |")
    return rows


def render() -> tuple[str, list[str]]:
    """The Markdown text of docs/config.md and the keys that have no help text."""
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
    from ls.models.options import (
        FiLMOptions,
        GRFOptions,
        MetadataOptions,
        ModelConfig,
        SoftFiLMOptions,
        TAFiLMOptions,
        WeightsConfig,
    )

    missing: list[str] = []
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from the config dataclasses; do not edit by hand. -->",
        "",
        "Every key of the typed config (`ls.config.load_config`), with its default and meaning. The defaults are",
        "the paper's values: a YAML file states only what differs from them. Unknown keys and wrong types are",
        "errors; every problem in a file is reported at once, with the key, where it came from and the nearest",
        "known key. Override any key on the command line with `--set section.key=value` (value parsed as YAML).",
        "Each default and its meaning live once, beside the field, in `ls/data/config.py` (`dataset`, `audio`),",
        "`ls/models/options.py` (`models`), `ls/engine/config.py` (`training`, `mlflow`) and",
        "`ls/config/__init__.py` (top level). Fixes that change the paper's behaviour are options here; see",
        "[fixes.md](fixes.md).",
        "",
        "Derived, not set: the model's input is `audio.n_mels` mel bins by `dataset.w` frames, and its",
        "`label_dim` follows from the output mode (`dataset.n_cls`, `dataset.multi_label`, `training.loss`);",
        "`dataset.h`, `models.<variant>.input_fdim` / `input_tdim` / `label_dim` may repeat those values (the",
        "original's configs do) but must agree with them.",
        "",
    ]

    def section(title: str, cls: type, prefix: str, intro: str = "", parent: type | None = None) -> None:
        out.extend([f"## {title}", ""])
        if intro:
            out.extend([intro, ""])
        out.extend(table(cls, prefix, missing, parent))
        out.append("")

    section("Top level", Config, "", "Sections of a config file; `seed`, `strict_config` and `plugins` are the only other top-level keys.")
    section("`dataset`", DatasetConfig, "dataset.")
    section("`audio`", AudioConfig, "audio.")
    section("`audio.wave_aug[]` / `audio.spec_aug[]` entries", AugmentConfig, "",
            "Each list entry is one augmentation, applied to the training split only; keys a type does not use "
            "are ignored.")
    models_intro = ("One block per variant under `models:`; the key is the variant's name or an alias. Each variant "
                    "reads its own options dataclass (below): a key the variant does not use is an error naming the "
                    "variant and the variants that do have it. The variant table (`ls.models.variants`):")
    out.extend(["## `models.<variant>`", "", models_intro, ""])
    out.extend(variant_table())
    out.append("")
    section("Every variant (`ModelConfig`)", ModelConfig, "")
    section("`models.<variant>.weights`", WeightsConfig, "weights.")
    section("Metadata-conditioned variants (`MetadataOptions`: GRF, FiLM, TAFiLM, SoftFiLM)", MetadataOptions, "",
            "The categorical factors and continuous features come from the data (its metadata schema); these keys "
            "say how they are embedded.", ModelConfig)
    for title, cls in (("GRF (`ast_fus`, `GRFOptions`)", GRFOptions), ("FiLM (`ast_film`, `FiLMOptions`)", FiLMOptions),
                       ("TAFiLM (`ast_tafilm`, `TAFiLMOptions`)", TAFiLMOptions),
                       ("SoftFiLM (`ast_film_soft`, `SoftFiLMOptions`)", SoftFiLMOptions)):
        section(title, cls, "", "", MetadataOptions)
    section("`training`", TrainingConfig, "training.")
    section("`training.optimizer`", OptimizerConfig, "training.optimizer.")
    section("`training.scheduler`", SchedulerConfig, "training.scheduler.")
    section("`training.thresholds`", ThresholdConfig, "training.thresholds.")
    section("`training.freeze`", FreezeConfig, "training.freeze.")
    section("`mlflow`", MlflowConfig, "mlflow.")
    return "\n".join(out).rstrip() + "\n", missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/config.md differs from the dataclasses")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    text, missing = render()
    if missing:
        print("keys without a help text (declare them with ls.utils.fields.option): " + ", ".join(missing),
              file=sys.stderr)
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
