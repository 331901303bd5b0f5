"""The torch-free side of a deployed model: everything ``ls.predict --onnx`` needs besides onnxruntime.

An ONNX file written by ``python -m ls.export`` describes itself in its ``metadata_props`` (keys ``ls.*``,
:mod:`ls.deploy.runtime`); this package reads them and prepares inputs with numpy and soundfile only:

- :mod:`ls.deploy.audio`: read, resample (torchaudio's windowed-sinc filter, recomputed in numpy), DC removal,
  cycle slicing and cut/pad to the model's input length, as ``ls.data.audio`` does it in training;
- :mod:`ls.deploy.runtime`: :class:`~ls.deploy.runtime.OnnxModel`, an onnxruntime session with its class names,
  decision rule, thresholds, metadata encoder and audio config.

Nothing here imports torch, directly or through ``ls`` (``tests/test_export.py`` runs ``ls.predict --onnx`` where
importing torch fails). The metadata encoder (``ls.data.metadata``) is the training one, rebuilt from its saved
state.
"""

from __future__ import annotations

import importlib

#: What ``pip install 'ls[deploy]'`` brings (import names).
DEPLOY_MODULES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install 'ls[deploy]' (in a clone: pip install -e '.[deploy]')"


class DeployUnavailable(ValueError):
    """A package of the ``deploy`` extra is missing; the message says how to install it."""


def require(*modules: str, what: str) -> None:
    """Import each of ``modules`` or raise :class:`DeployUnavailable` naming the missing ones and the extra."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DeployUnavailable(f"{what} needs {', '.join(missing)} from the deploy extra: {INSTALL_HINT}")


__all__ = ["DEPLOY_MODULES", "INSTALL_HINT", "DeployUnavailable", "require"]
