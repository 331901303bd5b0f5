"""Types shared by the data, model and engine layers (the seams between them)."""

from __future__ import annotations

from dataclasses import dataclass

#: Index reserved in the device and site vocabularies for values never seen in training.
UNKNOWN_ID = 0
UNKNOWN_TOKEN = "<unknown>"

#: Batch keys that carry metadata into ``model.forward(spec, meta)``.
META_KEYS = ("device", "site", "cont")


@dataclass(frozen=True)
class MetadataSpec:
    """What a fitted metadata encoder produces, i.e. what a conditioned model must accept.

    ``device_names[UNKNOWN_ID]`` and ``site_names[UNKNOWN_ID]`` are ``UNKNOWN_TOKEN``.
    ``cont_names`` lists the columns of ``batch["cont"]`` (z-scored features, then missing flags if enabled).
    """

    device_names: tuple[str, ...]
    site_names: tuple[str, ...]
    cont_names: tuple[str, ...]

    @property
    def num_devices(self) -> int:
        return len(self.device_names)

    @property
    def num_sites(self) -> int:
        return len(self.site_names)

    @property
    def cont_dim(self) -> int:
        return len(self.cont_names)

    def to_dict(self) -> dict:
        return {
            "device_names": list(self.device_names),
            "site_names": list(self.site_names),
            "cont_names": list(self.cont_names),
        }

    @classmethod
    def icbhi(cls) -> MetadataSpec:
        """The vocabulary of the whole ICBHI database (4 devices, 7 sites, age/BMI/duration), ordered as a
        ``MetadataEncoder`` fitted on it orders it: for building a model before any data is loaded."""
        from ls.data.icbhi import DEVICES, SITES

        return cls((UNKNOWN_TOKEN, *sorted(DEVICES)), (UNKNOWN_TOKEN, *sorted(SITES)), ("age", "bmi", "duration"))

    @classmethod
    def from_dict(cls, d: dict) -> MetadataSpec:
        return cls(tuple(d["device_names"]), tuple(d["site_names"]), tuple(d["cont_names"]))
