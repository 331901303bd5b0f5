"""An exported model (``python -m ls.export``) run with onnxruntime: no torch.

>>> model = OnnxModel.load("model.onnx")
>>> probs, decisions = model.run(waves, model.encode(duration=[4.0] * len(waves), device="Meditron", site="Tc"))

The file carries what a runtime needs in its ``metadata_props`` (all values are strings; JSON where marked):

==========================  =====================================================================================
key                         value
==========================  =====================================================================================
``ls.format``               version of this layout (``1``)
``ls.version``              the ``ls`` version that exported it
``ls.variant``              the model variant (``ast``, ``ast_film_soft``, ...)
``ls.task``                 the dataset task (``icbhi4``, ``event7``, ``record5``, ...)
``ls.checkpoint_sha256``    SHA-256 of the checkpoint file it was exported from
``ls.input``                ``waveform``: ``[N, samples]`` cut/padded cycles at ``ls.audio``'s sample rate;
                            ``features``: their raw Kaldi fbank ``[N, frames, mel_bins]``
``ls.input_shape``          JSON ``{"samples", "frames", "mel_bins", "model_frames"}``
``ls.output_mode``          JSON: ``kind`` (``multilabel``/``binary``/``multiclass``), ``n_classes``, ...
``ls.class_names``          JSON list, class id order (class 0 normal)
``ls.decision_rule``        the rule in one sentence; ``ls.thresholds`` JSON ``{name: value}``
``ls.factors``              JSON ``{factor: vocabulary}``, id = position; ``ls.unknown_id`` the id of unseen values
``ls.continuous``           JSON: ``names`` (the ``cont`` columns), ``medians`` (imputed for missing values),
                            ``mean``/``std`` (z-score), ``ranges`` (seen in training)
``ls.metadata_encoder``     JSON: the full state of the training metadata encoder (``ls.data.metadata``)
``ls.audio``                JSON: the audio config (sample rate, cycle length, padding, fbank parameters)
``ls.normalizer``           JSON: ``mean``, ``scale``, ``mode`` of the feature normalisation (inside the graph)
==========================  =====================================================================================

Graph inputs: ``waveform`` (or ``features``), one int64 ``[N]`` per factor (named by the factor), ``cont``
float32 ``[N, C]`` (z-scored, as the encoder gives it); the baseline AST takes no metadata inputs. Outputs:
``probabilities`` (``[N, 2]`` sigmoid crackle/wheeze, ``[N]`` sigmoid abnormal, or ``[N, K]`` softmax) and
``decisions`` (int64 ``[N]`` class ids under the stored thresholds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ls.deploy import require
from ls.engine.modes import OutputMode

#: Version of the metadata layout above.
EXPORT_FORMAT = 1
PREFIX = "ls."


class ModelFileError(ValueError):
    """The file is not a model exported by ``ls.export`` (or a layout this version cannot read)."""


@dataclass
class OnnxModel:
    """An onnxruntime session and what the file says about its inputs and outputs."""

    path: Path
    session: Any
    props: dict[str, str]
    mode: OutputMode
    class_names: list[str]
    thresholds: tuple[float, ...] | None
    audio: dict[str, Any]
    encoder: Any  # ls.data.metadata.MetadataEncoder or None
    input_kind: str
    input_names: list[str] = field(default_factory=list)

    # -- what the prediction code reads, named as on an ls.inference.InferenceContext --------------------------
    @property
    def variant(self) -> str:
        return self.props.get("ls.variant", "?")

    @property
    def task(self) -> str:
        return self.props.get("ls.task", "")

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OnnxModel:
        """Open ``path`` with onnxruntime (CPU); ``threads``: intra-op threads (None: onnxruntime's default)."""
        require("onnxruntime", what="running an exported model")
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for any unreadable file
            raise ModelFileError(f"{path} is not a readable ONNX model: {str(exc).splitlines()[0][:300]}") from None
        props = dict(session.get_modelmeta().custom_metadata_map)
        return cls.from_session(path, session, props)

    @classmethod
    def from_session(cls, path: Path, session: Any, props: Mapping[str, str]) -> OnnxModel:
        props = dict(props)
        if "ls.format" not in props:
            raise ModelFileError(f"{path} was not exported by ls.export: its metadata has no 'ls.format' entry "
                                 "(export a checkpoint with python -m ls.export --checkpoint best.pt --out model.onnx)")
        if int(props["ls.format"]) > EXPORT_FORMAT:
            raise ModelFileError(f"{path} has export format {props['ls.format']}; this ls reads format "
                                 f"{EXPORT_FORMAT}: use the ls version that exported it ({props.get('ls.version')})")
        try:
            mode = OutputMode.from_dict(json.loads(props["ls.output_mode"]))
            thresholds = json.loads(props["ls.thresholds"])
            encoder_state = json.loads(props["ls.metadata_encoder"])
            audio = json.loads(props["ls.audio"])
            class_names = json.loads(props["ls.class_names"])
            input_kind = props["ls.input"]
        except (KeyError, ValueError) as exc:
            raise ModelFileError(f"{path}: broken ls metadata ({type(exc).__name__}: {exc})") from None
        encoder = None
        if encoder_state:
            from ls.data.metadata import MetadataEncoder

            encoder = MetadataEncoder.from_state_dict(encoder_state)
        return cls(path=path, session=session, props=props, mode=mode, class_names=list(class_names),
                   thresholds=tuple(thresholds.values()) if thresholds else None, audio=audio, encoder=encoder,
                   input_kind=input_kind, input_names=[i.name for i in session.get_inputs()])

    def encode(self, *, duration: Any, **values: Any) -> dict[str, np.ndarray]:
        """The model's metadata inputs for N cycles (``duration``: one per cycle), with the training encoder."""
        if self.encoder is None:
            return {}
        return self.encoder.encode_values(duration=duration, **values)

    def run(self, x: np.ndarray, meta: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, decisions)`` of a batch: ``x`` the padded waveforms ``[N, samples]`` (or features),
        ``meta`` the encoded metadata (only the inputs the graph declares are passed)."""
        meta = dict(meta or {})
        feed = {self.input_names[0]: np.ascontiguousarray(x, dtype=np.float32)}
        for name in self.input_names[1:]:
            if name not in meta:
                raise ValueError(f"{self.path}: the model needs metadata input {name!r}")
            value = np.asarray(meta[name])
            feed[name] = np.ascontiguousarray(value, dtype=np.float32 if name == "cont" else np.int64)
        probs, decisions = self.session.run(["probabilities", "decisions"], feed)
        return probs, decisions

    def describe(self) -> dict[str, Any]:
        """What the JSON output of ``ls.predict`` says about the model."""
        return {"onnx": str(self.path), "variant": self.variant,
                "checkpoint_sha256": self.props.get("ls.checkpoint_sha256"),
                "exported_by": f"ls {self.props.get('ls.version', '?')}"}


__all__ = ["EXPORT_FORMAT", "ModelFileError", "OnnxModel"]
