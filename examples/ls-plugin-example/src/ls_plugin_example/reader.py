"""``dataset.name: class_folders``: one wav per respiratory cycle, in a folder per split and class.

    <data_folder>/<split>/<class>/<patient>_<device>_<site>_<anything>.wav

``split`` is ``train`` or ``test`` (``val`` too, if you have one); ``class`` one of ``normal``, ``crackle``,
``wheeze``, ``both``, read as ICBHI's crackle/wheeze bits, so the tasks are ICBHI's (``icbhi4``, ``icbhi2``) and
so are the metrics. The file name carries the metadata: the patient (what splits and the report group by), the
stethoscope (``device``) and the chest location (``site``), the two categorical factors; the cycle's duration
is the continuous feature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf

from ls.data.schema import MetadataSchema
from ls.data.sources import Source

#: Class folder -> (crackles, wheezes).
CLASSES = {"normal": (0, 0), "crackle": (1, 0), "wheeze": (0, 1), "both": (1, 1)}
TASKS = ("icbhi4", "icbhi2")
SCHEMA = MetadataSchema(factors={"device": "Device", "site": "Site"}, continuous={"duration": None},
                        labels={"device": "Device", "site": "Site", "duration": "Duration"})


def read_class_folders(cfg: Any) -> Source:
    """The segment table of a ``dataset`` section (``cfg.data_folder``), one row per wav file."""
    root = Path(cfg.data_folder)
    rows = []
    for wav in sorted(root.glob("*/*/*.wav")):
        split, label = wav.parts[-3], wav.parts[-2]
        if label not in CLASSES:
            raise ValueError(f"{wav}: class folder {label!r} is not one of {', '.join(CLASSES)}")
        fields = wav.stem.split("_")
        if len(fields) < 4:
            raise ValueError(f"{wav}: expected <patient>_<device>_<site>_<anything>.wav")
        info = sf.info(str(wav))
        crackles, wheezes = CLASSES[label]
        rows.append({"Filename": wav.stem, "CycleIndex": 0, "CycleStart": 0.0,
                     "CycleEnd": info.frames / info.samplerate, "PID": fields[0], "Split": split,
                     "Crackles": crackles, "Wheezes": wheezes, "Device": fields[1], "Site": fields[2],
                     "AudioPath": str(wav)})
    if not rows:
        raise FileNotFoundError(f"dataset.data_folder {root}: no <split>/<class>/*.wav files")
    return Source(pd.DataFrame(rows), SCHEMA)
