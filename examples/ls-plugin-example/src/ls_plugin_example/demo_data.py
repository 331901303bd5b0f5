"""A folder-per-class dataset to try the plugin on: ls's synthetic ICBHI recordings cut into one wav per cycle.

    python -m ls_plugin_example.demo_data OUT [--recordings 24] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from ls_plugin_example.reader import CLASSES

_CLASS_OF_BITS = {bits: name for name, bits in CLASSES.items()}


def make_class_folders(out: str | Path, recordings: int = 24, seed: int = 0) -> Path:
    """``out/<split>/<class>/<patient>_<device>_<site>_<recording>c<cycle>.wav`` from a synthetic ICBHI folder
    (``out/icbhi``, kept: its recordings are what the cycles are cut from)."""
    from ls.data.icbhi import build_cycle_table
    from ls.data.synthetic import generate_icbhi

    out = Path(out)
    source = out / "icbhi"
    if not (source / "synthetic_info.json").exists():
        generate_icbhi(source, recordings=recordings, seed=seed)
    table = build_cycle_table(source)
    for recording, cycles in table.groupby("Filename"):
        audio, rate = sf.read(str(source / f"{recording}.wav"), dtype="float32")
        for row in cycles.itertuples():
            label = _CLASS_OF_BITS[(int(row.Crackles), int(row.Wheezes))]
            name = f"{row.PID}_{row.Device}_{row.AuscLoc}_{recording.replace('_', '-')}c{row.CycleIndex}.wav"
            path = out / "folders" / str(row.Split) / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio[int(row.CycleStart * rate):int(row.CycleEnd * rate)], rate)
    return out / "folders"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ls_plugin_example.demo_data", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--recordings", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(make_class_folders(args.out, args.recordings, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
