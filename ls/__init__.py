"""ls: respiratory sound classification with metadata-conditioned Audio Spectrogram Transformers."""

__version__ = "0.1.0"
