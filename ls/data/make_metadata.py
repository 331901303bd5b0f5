"""Build the cycle table CSV (``icbhi_metadata.csv``) from an ICBHI folder.

Usage::

    python -m ls.data.make_metadata --data-folder DIR [--out icbhi_metadata.csv] [--fold-file PATH]

The file is written atomically and a summary (recordings, patients, cycles per split and class, missing
demographics) is printed. See :func:`ls.data.icbhi.build_cycle_table` for the rules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ls.data.icbhi import build_cycle_table, write_cycle_table
from ls.data.labels import class_names, cycle_labels
from ls.utils.cli import add_common_options, run_command


def summarize(table: pd.DataFrame) -> str:
    """Human-readable counts of a cycle table: totals, per split (recordings, patients, cycles per 4-class
    label), per device, and missing values per column."""
    names = class_names(4)
    labels = cycle_labels(table["Crackles"], table["Wheezes"], n_cls=4, multi_label=False)
    counts = table.assign(Label=[names[i] for i in labels])
    lines = [
        f"{len(table)} cycles, {table['Filename'].nunique()} recordings, {table['PID'].nunique()} patients",
    ]
    per_split = counts.groupby("Split").agg(
        recordings=("Filename", "nunique"), patients=("PID", "nunique"), cycles=("Filename", "size")
    )
    per_class = (
        counts.groupby(["Split", "Label"]).size().unstack(fill_value=0).reindex(columns=names, fill_value=0)
    )
    lines.append(per_split.join(per_class).to_string())
    lines.append(
        "cycles per device: "
        + ", ".join(f"{k} {v}" for k, v in table["Device"].value_counts().sort_index().items())
    )
    missing = table.isna().sum()
    missing = missing[missing > 0]
    lines.append(
        "missing values: " + (", ".join(f"{k} {v}" for k, v in missing.items()) if len(missing) else "none")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ls.data.make_metadata",
        description="Build the ICBHI cycle table (icbhi_metadata.csv).",
    )
    parser.add_argument(
        "--data-folder", required=True, type=Path, help="folder with the .wav/.txt recordings"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output CSV (default: DATA_FOLDER/icbhi_metadata.csv)"
    )
    parser.add_argument(
        "--fold-file", type=Path, default=None, help="patient fold list (patient_list_foldwise.txt)"
    )
    parser.add_argument(
        "--split-file", type=Path, default=None, help="split file (default: found in the folder)"
    )
    parser.add_argument("--diagnosis-file", type=Path, default=None, help="diagnosis file (default: found)")
    parser.add_argument(
        "--demographics-file", type=Path, default=None, help="demographics file (default: found)"
    )
    parser.add_argument("--no-check-audio", action="store_true", help="do not read WAV headers")
    add_common_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        table = build_cycle_table(
            args.data_folder,
            split_file=args.split_file,
            diagnosis_file=args.diagnosis_file,
            demographics_file=args.demographics_file,
            fold_file=args.fold_file,
            check_audio=not args.no_check_audio,
        )
        out = args.out if args.out is not None else args.data_folder / "icbhi_metadata.csv"
        write_cycle_table(table, out)
        print(summarize(table))
        print(f"wrote {out}")
        return 0

    return run_command(body, args)  # a problem: one ``error:`` line, exit code 2


if __name__ == "__main__":
    sys.exit(main())
