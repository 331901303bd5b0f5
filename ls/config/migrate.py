"""Write a config in ls's own keys: ``python -m ls.config.migrate OLD.yaml > NEW.yaml`` (or ``-o NEW.yaml``).

Meant for the original implementation's configs (:mod:`ls.config.original`), and works on any config. The
output holds only what differs from ls's defaults: a key is written when leaving it out would change the
resolved config. Every key that came from a translated one carries a ``# was ...`` comment; the header lists
the keys that were not carried over (no effect in the original) and those translated to ls's default value.
The output is checked before it is written: it must load to the same resolved config as the input.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from ls.config import Config, ConfigError, build_config, to_dict
from ls.config.loader import read_yaml
from ls.config.original import Translation, show
from ls.utils.cli import add_common_options, run_command


def resolved(cfg: Config) -> dict:
    """A config as plain data, so that two configs that mean the same run are equal: model blocks keyed by
    canonical variant (``ast_meta_proj`` is ``ast_fus``), and ``use_factors`` without its ``true`` entries (a
    factor left out is used: the original's ``use_device: true`` says what ls does anyway)."""
    data = to_dict(cfg)
    data["models"] = {block.variant: to_dict(block) for block in cfg.models.values()}
    for block in data["models"].values():
        if isinstance(block.get("use_factors"), dict):
            block["use_factors"] = {k: v for k, v in block["use_factors"].items() if v is not True}
    return data


def _leaves(node: dict, path: tuple = ()) -> Iterator[tuple]:
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key)


def _without(data: dict, path: tuple) -> dict:
    """``data`` without the leaf at ``path``; sections left empty go too, except model blocks (a block's presence
    is what says the variant is configured)."""
    out = copy.deepcopy(data)
    parents = [out]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    del parents[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth] or (depth == 2 and path[0] == "models"):
            break
        del parents[depth - 1][path[depth - 1]]
    return out


def minimal(cfg: Config, source: str) -> dict:
    """The smallest mapping of ls keys that loads to the same resolved config as ``cfg``."""
    want = resolved(cfg)
    data = to_dict(cfg)
    data["models"] = {block.variant: {k: v for k, v in to_dict(block).items() if k != "variant"}
                      for block in cfg.models.values()}
    for entries in (data["audio"]["wave_aug"], data["audio"]["spec_aug"]):  # unset fields of list entries
        entries[:] = [{k: v for k, v in entry.items() if v is not None} for entry in entries]

    def same(candidate: dict) -> bool:
        try:
            return resolved(build_config(candidate, source)[0]) == want
        except ConfigError:
            return False

    if not same(data):
        raise RuntimeError(f"{source}: ls.config.migrate could not write this config in ls's keys; please report it")
    for path in list(_leaves(data)):
        trial = _without(data, path)
        if same(trial):
            data = trial
    return data


def _relative(key: str, target: str) -> str:
    """``models.ast.audioset_ckpt_path`` seen from ``models.ast.weights.path`` -> ``audioset_ckpt_path``."""
    a, b = key.split("."), target.split(".")
    i = 0
    while i < min(len(a), len(b)) - 1 and a[i] == b[i]:
        i += 1
    return ".".join(a[i:])


def _canonical(dotted: str, names: dict[str, str]) -> str:
    parts = dotted.split(".")
    if len(parts) > 1 and parts[0] == "models" and parts[1] in names:
        parts[1] = names[parts[1]]
    return ".".join(parts)


def _comments(cfg: Config, translation: Translation, alias_of: dict[str, str]) -> dict[str, str]:
    """``{ls dotted key: comment}``: where each written key came from (a translated key, an old key name)."""
    names = {written: block.variant for written, block in cfg.models.items()}
    was: dict[str, list[str]] = {}
    why: dict[str, list[str]] = {}
    for note in translation.notes:
        if note.action == "ignored" or note.target is None:
            continue
        target = _canonical(note.target, names)
        if note.action == "default":
            why.setdefault(target, []).append(f"absent in the original: {note.reason}")
        elif note.key == note.target:
            was.setdefault(target, []).append(show(note.value))
            why.setdefault(target, []).append(note.reason)
        elif not note.moved:
            why.setdefault(target, []).append(f"from {note.key}: {show(note.value)}, {note.reason}")
        elif show(note.value) == show(note.new):
            was.setdefault(target, []).append(_relative(note.key, note.target))
        else:
            was.setdefault(target, []).append(f"{_relative(note.key, note.target)}: {show(note.value)}")
    for typed, alias in alias_of.items():
        target = _canonical(typed, names)
        if target not in was and target not in why:
            was[target] = [_relative(alias, typed)]
    for written, variant in names.items():
        if written != variant:
            was[f"models.{variant}"] = [f"models.{written}"]
    out = {}
    for target in {**was, **why}:
        parts = ([f"was {', '.join(was[target])}"] if target in was else []) + why.get(target, [])
        out[target] = "; ".join(parts)
    return out


def _render(node: dict, comments: dict[str, str], path: str = "", indent: int = 0) -> list[str]:
    lines = []
    pad = "  " * indent
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else str(key)
        tail = f"  # {comments[dotted]}" if dotted in comments else ""
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{show(key)}:{tail}")
            lines += _render(value, comments, dotted, indent + 1)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{show(key)}:{tail}")
            for i, item in enumerate(value):
                notes = [c for k, c in comments.items() if k.startswith(f"{dotted}[{i}].")]
                lines.append(f"{pad}  - {show(item)}" + (f"  # {'; '.join(notes)}" if notes else ""))
        else:
            lines.append(f"{pad}{show(key)}: {show(value)}{tail}")
    return lines


def _present(data: dict, dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        part = part.split("[")[0]
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def migrate(path: str | Path, overrides: list[str] | None = None) -> tuple[str, Translation]:
    """The YAML text of ``path`` in ls's keys (see the module's docstring) and what was translated."""
    source = str(path)
    cfg, ctx = build_config(read_yaml(path), source, overrides)
    translation = cfg.translation
    data = minimal(cfg, source)
    comments, notes = _comments(cfg, translation, ctx.alias_of), translation.notes
    names = {written: block.variant for written, block in cfg.models.items()}
    header = [f"# ls config written by `python -m ls.config.migrate` from {source}"
              + (" (the original implementation's format)." if translation.original else "."),
              "# Only what differs from ls's defaults is written (docs/config.md); `# was` names its original key."]
    unwritten = [n for n in notes if n.action != "ignored" and n.target
                 and not _present(data, _canonical(n.target, names))]
    if unwritten:
        header.append("# Translated to ls's default value, so not written:")
        header += [f"#   {n.line()}" for n in unwritten]
    ignored = [n for n in notes if n.action == "ignored"]
    if ignored:
        header.append("# Not carried over (no effect in the original):")
        header += [f"#   {n.line()}" for n in ignored]
    text = "\n".join(header + _render(data, comments)) + "\n"
    # the written file must mean the same run as the input
    reread = yaml.safe_load(text)
    if reread != data or resolved(build_config(reread, source)[0]) != resolved(cfg):
        raise RuntimeError(f"{source}: ls.config.migrate wrote a config that does not load to the same one; "
                           "please report it")
    return text, translation


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ls.config.migrate",
        description="Write a config (e.g. one of the original implementation's) in ls's own keys, keeping only "
                    "what differs from the defaults, with a comment on every translated key.")
    p.add_argument("config", help="the YAML config to migrate")
    p.add_argument("-o", "--out", default=None, help="write here (atomically) instead of to standard output")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value first, e.g. --set dataset.data_folder=/data/icbhi (repeatable)")
    add_common_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems (a bad config, an unreadable input, an output that cannot be written) are one
    ``error:`` line and exit code 2 (``--traceback`` shows where)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        text, translation = migrate(args.config, args.overrides)
        if args.out:
            from ls.utils.io import atomic_write_text

            atomic_write_text(args.out, text)
        else:
            sys.stdout.write(text)
        if translation.notes:
            counts = {a: sum(n.action == a for n in translation.notes) for a in ("translated", "default", "ignored")}
            print(f"{args.config}: {counts['translated']} keys translated, {counts['default']} set to the "
                  f"original's default, {counts['ignored']} ignored (listed in the output's comments)",
                  file=sys.stderr)
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    sys.exit(main())
