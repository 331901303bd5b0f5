"""Reading recordings, with no dependency inside ``ls`` and no torch: WAV file integrity (anything that reads
durations from WAV headers, the cycle table of ``ls.data.icbhi``, checks a file here first) and the one reader
of samples, :func:`read_audio`, which training, the feature cache, ``ls.predict`` and the torch-free ONNX
runtime (``ls.deploy``) all go through."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """A recording cannot be read (missing, corrupt, truncated, empty); the message names the file."""


def check_wav_complete(path: str | Path) -> None:
    """Raise :class:`AudioError` if a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds.

    libsndfile silently returns the frames that are present in a truncated WAV; a half-copied recording
    would then yield shortened cycles (and zero-padded features) without any sign of the problem. Anything
    that reads durations from WAV headers calls this first, so a truncated file is reported as such rather
    than as cycles reaching past the end of the audio.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not a plain RIFF WAVE (e.g. RF64, FLAC): leave the checks to libsndfile
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_len = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_len in (0, 0xFFFFFFFF):  # streamed WAVs write a placeholder length
                    return
                if offset + 8 + chunk_len > size:
                    raise AudioError(
                        f"{path}: truncated WAV file (data chunk declares {chunk_len} bytes, "
                        f"only {size - offset - 8} present); re-copy the recording"
                    )
                return
            offset += 8 + chunk_len + (chunk_len & 1)  # chunks are word-aligned
    raise AudioError(f"{path}: WAV file has no data chunk")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a recording as mono float32.

    Returns:
        ``(wave [L] float32 in [-1, 1], sample_rate)``; multi-channel files are averaged to mono.

    Raises:
        AudioError naming the file when it is missing, unreadable, truncated, empty, or holds NaN or infinite
        samples (possible in float WAVs; they would turn every feature into NaN, which no model can classify).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"recording not found: {path}")
    check_wav_complete(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: recording holds no samples")
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise AudioError(f"{path}: {int((~finite).sum())} sample(s) are NaN or infinite (the first at "
                         f"{first / sr:.3f} s); the recording is corrupt and cannot be used")
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(wave), int(sr)
