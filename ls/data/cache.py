"""On-disk cache of cycle features (and, when waveform augmentation needs them, padded cycle waveforms).

Layout: ``<cache_dir>/<kind>-<key>/`` holding ``data.f16`` (a float16 ``numpy.memmap``: features
``[N, w, n_mels]`` or waveforms ``[N, samples]``), ``index.npz`` (Filename, CycleIndex per row, to verify the row
order) and ``meta.json`` (written last; its presence marks a complete entry). An entry is built in a temp folder
(``.tmp-<kind>-<key>-<pid>/``, with ``owner.json`` naming host and process) and renamed into place, so a crash
never leaves a half-written entry; the temp folder of a build that was killed is removed by the next build
(:func:`remove_stale_builds`).

The key hashes everything that changes the stored numbers: the audio fields that act before normalisation, the
target size, the cycle list (file, index, start, end) and every wav's path, size and modification time. A
touched wav or a changed config therefore misses and rebuilds; changing ``mel_norm`` or augmentations does
not. A full ICBHI feature set (6,898 x 1024 x 128 float16) is 1.8 GB on disk and is paged in on demand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio

from ls.data import audio as audio_mod
from ls.data import features as features_mod
from ls.data.config import AudioConfig
from ls.utils.io import WriteError, atomic_write_text, write_failure_reason

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: AudioConfig fields that change the padded waveform.
WAVE_FIELDS = (
    "sample_rate",
    "desired_length",
    "remove_dc",
    "normalize",
    "pad_type",
    "use_fade",
    "fade_samples_ratio",
)
#: ... and, on top of those, the raw (unnormalised) features.
FEATURE_FIELDS = WAVE_FIELDS + (
    "n_mels",
    "frame_length",
    "frame_shift",
    "low_freq",
    "high_freq",
    "window_type",
    "use_energy",
    "dither",
    "frame_fit",
)
_DATA, _INDEX, _META = "data.f16", "index.npz", "meta.json"
#: Builds happen in ``<cache_dir>/.tmp-<kind>-<key>-<pid>/``, holding ``owner.json`` (host, pid) until done.
_TMP_PREFIX, _OWNER = ".tmp-", "owner.json"
#: A temp build folder whose owner cannot be checked (another host, or written by an older ls) is stale
#: once nothing in it has changed for this long.
STALE_AFTER_S = 6 * 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _last_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for f in folder.iterdir():
        try:
            times.append(f.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def _is_stale(folder: Path, now: float) -> bool:
    """A build folder left by a process that died (killed, crashed, machine rebooted) before finishing."""
    try:
        owner = json.loads((folder / _OWNER).read_text())
        host, pid = owner.get("host"), int(owner.get("pid"))
    except (OSError, ValueError, TypeError):
        host, pid = None, None
        tail = folder.name.rsplit("-", 1)[-1]
        if tail.isdigit():
            pid = int(tail)
    try:
        idle = now - _last_change(folder)
    except OSError:
        return False
    if pid == os.getpid() and host in (None, socket.gethostname()):
        return False
    if host == socket.gethostname() and pid is not None:
        return not _pid_alive(pid)
    # Unknown owner or another machine sharing the folder: only a long-idle folder is taken as abandoned.
    return idle > STALE_AFTER_S and (host is not None or pid is None or not _pid_alive(pid))


def remove_stale_builds(cache_dir: str | Path) -> list[Path]:
    """Delete the temp folders of cache builds that were killed before they finished (up to the size of a
    whole feature set each); returns what was removed. Builds still running are left alone."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    now = time.time()
    removed = []
    try:
        candidates = sorted(cache_dir.glob(f"{_TMP_PREFIX}*"))
    except OSError:
        return []
    for folder in candidates:
        # Clean-up only: another process may remove the same folder meanwhile, or files may vanish under us.
        try:
            if not (folder.is_dir() and _is_stale(folder, now)):
                continue
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
            log.warning("removed %s (%.1f MB) left by a cache build that did not finish", folder, size / 1e6)
    return removed


def _cache_write_error(cache_dir: Path, exc: OSError) -> WriteError:
    return WriteError(exc.errno or 0, f"cannot write the feature cache in {cache_dir}: "
                      f"{write_failure_reason(exc, cache_dir)}; set dataset.cache_dir to a writable folder")


@dataclass(frozen=True)
class CachedArray:
    """A complete cache entry: a float16 array of ``shape`` whose row i belongs to row i of the cycle table.

    The memmap is opened lazily (and re-opened in each DataLoader worker) instead of being pickled.
    """

    path: Path
    shape: tuple[int, ...]
    hit: bool  # True when the entry existed before this call

    def open(self) -> np.memmap:
        return np.memmap(self.path / _DATA, dtype=np.float16, mode="r", shape=self.shape)


def _wav_paths(table: pd.DataFrame, data_folder: Path) -> dict[str, Path]:
    """Audio file of each recording of ``table``: its ``AudioPath`` column (``ls.data.sources``), else
    ``<data_folder>/<Filename>.wav``."""
    names = pd.unique(table["Filename"])
    if "AudioPath" in table.columns:
        first = table.drop_duplicates("Filename").set_index("Filename")["AudioPath"]
        return {name: Path(first[name]) for name in names}
    return {name: data_folder / f"{name}.wav" for name in names}


def cache_key(
    kind: str, audio_cfg: AudioConfig, table: pd.DataFrame, data_folder: Path, w: int | None
) -> str:
    """Hex digest identifying the stored numbers (see module docstring)."""
    fields = WAVE_FIELDS if kind == "waves" else FEATURE_FIELDS
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "version": CACHE_VERSION,
                "kind": kind,
                "audio": {f: getattr(audio_cfg, f) for f in fields},
                "w": w,
                "torchaudio": torchaudio.__version__.split("+")[0],
            },
            sort_keys=True,
        ).encode()
    )
    cycles = table[["Filename", "CycleIndex", "CycleStart", "CycleEnd"]]
    h.update(pd.util.hash_pandas_object(cycles, index=False).values.tobytes())
    for path in _wav_paths(table, data_folder).values():
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _init_worker() -> None:
    torch.set_num_threads(1)  # one recording per process; intra-op threads would only oversubscribe the CPUs


def _recording_job(job: tuple) -> tuple[int, np.ndarray, int]:
    """Compute one recording's rows: ``(job_id, float16 [n, ...], n_clamped)``."""
    job_id, wav_path, cycles, audio_cfg, w, kind = job
    wave = audio_mod.load_recording(wav_path, audio_cfg)
    padded, clamped = audio_mod.extract_cycles(wave, cycles, audio_cfg, source=wav_path)
    if kind == "waves":
        return job_id, padded.numpy().astype(np.float16), clamped
    feats = features_mod.cycle_features(padded, audio_cfg, w)
    return job_id, feats.numpy().astype(np.float16), clamped


def _run_jobs(jobs: list[tuple], workers: int) -> Iterator[tuple[int, np.ndarray, int]]:
    if workers <= 1 or len(jobs) < 2:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # fbank is many small ops: extra threads only add contention (20x measured)
        try:
            for job in jobs:
                yield _recording_job(job)
        finally:
            torch.set_num_threads(threads)
        return
    # spawn: forking a process that already runs torch's thread pools can deadlock
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        yield from pool.map(_recording_job, jobs, chunksize=4)


def ensure_cached(
    kind: str,
    table: pd.DataFrame,
    data_folder: str | Path,
    audio_cfg: AudioConfig,
    cache_dir: str | Path,
    w: int | None = None,
    workers: int | None = None,
) -> CachedArray:
    """Return the cache entry of ``kind`` (``"features"`` or ``"waves"``) for the rows of ``table``, building it
    when absent.

    Args:
        table: cycle table (columns Filename, CycleIndex, CycleStart, CycleEnd); stored row i = table row i.
        w: frame count of features (required for ``features``).
        workers: processes used to build (None: all CPUs; 0 or 1: in this process).
    """
    if kind not in ("features", "waves"):
        raise ValueError(f"cache kind must be 'features' or 'waves', got {kind!r}")
    if kind == "features" and w is None:
        raise ValueError("a feature cache needs the frame count w")
    data_folder, cache_dir = Path(data_folder), Path(cache_dir)
    wav_paths = _wav_paths(table, data_folder)
    missing = [str(p) for p in wav_paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} recording(s) of the segment table are missing, e.g. {missing[:3]}")
    n = len(table)
    row_shape = (w, audio_cfg.n_mels) if kind == "features" else (audio_mod.target_length(audio_cfg),)
    shape = (n, *row_shape)
    key = cache_key(kind, audio_cfg, table, data_folder, w if kind == "features" else None)
    final = cache_dir / f"{kind}-{key}"
    if (final / _META).is_file():
        expected = int(np.prod(shape)) * 2
        if (final / _DATA).stat().st_size == expected:
            log.info("feature cache hit: %s", final)
            return CachedArray(final, shape, hit=True)
        log.warning("cache entry %s has the wrong size; rebuilding it", final)
        shutil.rmtree(final, ignore_errors=True)

    workers = (os.cpu_count() or 1) if workers is None else workers
    tmp = cache_dir / f"{_TMP_PREFIX}{kind}-{key}-{os.getpid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_write_error(cache_dir, exc) from None
    remove_stale_builds(cache_dir)  # clean-up: its problems are not this build's
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        atomic_write_text(tmp / _OWNER, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                    "started": time.time()}))
    except OSError as exc:
        raise _cache_write_error(cache_dir, exc) from None
    t0 = time.perf_counter()
    try:
        out = np.memmap(tmp / _DATA, dtype=np.float16, mode="w+", shape=shape)
        positions: list[np.ndarray] = []
        jobs = []
        for job_id, (name, rows) in enumerate(table.groupby("Filename", sort=False).indices.items()):
            positions.append(rows)
            cycles = list(
                zip(
                    table["CycleStart"].to_numpy()[rows].tolist(), table["CycleEnd"].to_numpy()[rows].tolist()
                )
            )
            jobs.append((job_id, str(wav_paths[name]), cycles, audio_cfg, w, kind))
        clamped = 0
        for job_id, arr, n_clamped in _run_jobs(jobs, workers):
            out[positions[job_id]] = arr
            clamped += n_clamped
        out.flush()
        del out
        np.savez(
            tmp / _INDEX,
            filename=table["Filename"].to_numpy(dtype=str),
            cycle_index=table["CycleIndex"].to_numpy(dtype=np.int64),
        )
        meta = {
            "kind": kind,
            "shape": list(shape),
            "dtype": "float16",
            "cycles_clamped": clamped,
            "recordings": len(jobs),
            "seconds": round(time.perf_counter() - t0, 2),
            "audio": {f: getattr(audio_cfg, f) for f in FEATURE_FIELDS},
            "created": time.time(),
        }
        (tmp / _OWNER).unlink()
        atomic_write_text(tmp / _META, json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same entry first: theirs is identical
            if not (final / _META).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if clamped:
        log.warning(
            "%d cycle(s) reach past the end of their recording; slices were clamped (zeros if empty)", clamped
        )
    log.info(
        "built %s cache of %d rows from %d recordings in %.1f s: %s",
        kind,
        n,
        len(jobs),
        time.perf_counter() - t0,
        final,
    )
    return CachedArray(final, shape, hit=False)


def feature_stats(
    entry: CachedArray, rows: Sequence[int] | np.ndarray, chunk: int = 256
) -> tuple[float, float]:
    """Mean and population std over all frames and bins of the given rows (float64 streaming sums).

    The result is memoised in the entry folder, keyed by the row set, so a rebuild does not re-read the data.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("cannot measure feature statistics on an empty training split")
    digest = hashlib.sha256(rows.tobytes()).hexdigest()[:16]
    memo = entry.path / f"stats-{digest}.json"
    if memo.is_file():
        d = json.loads(memo.read_text())
        return d["mean"], d["std"]
    data = entry.open()
    total = total_sq = 0.0
    count = 0
    for i in range(0, rows.size, chunk):
        x = np.asarray(data[np.sort(rows[i : i + chunk])], dtype=np.float64)
        total += x.sum()
        total_sq += np.square(x).sum()
        count += x.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    atomic_write_text(memo, json.dumps({"mean": mean, "std": std, "rows": int(rows.size)}))
    return float(mean), std


def describe(entry: CachedArray) -> dict:
    """The entry's ``meta.json`` plus its folder (for logging)."""
    return {"path": str(entry.path), **json.loads((entry.path / _META).read_text())}


__all__ = [
    "FEATURE_FIELDS",
    "WAVE_FIELDS",
    "CachedArray",
    "cache_key",
    "describe",
    "ensure_cached",
    "feature_stats",
    "remove_stale_builds",
]
