"""WAV file integrity, with no dependency inside ``ls``: anything that reads durations from WAV headers (the
cycle table of ``ls.data.icbhi``) and the audio reader (``ls.data.audio``) check a file here first."""

from __future__ import annotations

import struct
from pathlib import Path


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
