"""ls.data.cache: a rebuild reads the cache (no feature computed twice), a config change or a touched wav
invalidates it, stored values match a direct computation, entries are complete or absent."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import ls.data.features as features_mod
from ls.data.audio import extract_cycles, load_recording
from ls.data.cache import ensure_cached, feature_stats
from ls.data.config import AudioConfig

AUDIO = AudioConfig(desired_length=0.5, n_mels=16)
W = 32


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for r, (sr, subtype) in enumerate([(16000, "PCM_16"), (8000, "PCM_24")]):
        name = f"10{r}_1b1_Al_sc_Meditron"
        sf.write(tmp_path / f"{name}.wav", rng.normal(0, 0.1, 2 * sr).astype(np.float32), sr, subtype=subtype)
        rows += [(name, 0, 0.0, 0.4), (name, 1, 0.4, 1.3), (name, 2, 1.3, 2.5)]  # last one past the end
    table = pd.DataFrame(rows, columns=["Filename", "CycleIndex", "CycleStart", "CycleEnd"])
    return tmp_path, table


@pytest.fixture
def counted(monkeypatch):
    """Counts fbank computations (cache builds run in-process with workers=0)."""
    calls = {"n": 0}
    real = features_mod.log_mel_fbank

    def counting(wave, cfg):
        calls["n"] += 1
        return real(wave, cfg)

    monkeypatch.setattr(features_mod, "log_mel_fbank", counting)
    return calls


def _build(folder, table, audio=AUDIO, **kw):
    return ensure_cached("features", table, folder, audio, folder / ".cache", w=W, workers=0, **kw)


def test_rebuild_reads_cache_without_computing(folder, counted):
    path, table = folder
    first = _build(path, table)
    assert not first.hit and counted["n"] == len(table)
    second = _build(path, table)
    assert second.hit and second.path == first.path and counted["n"] == len(table)
    np.testing.assert_array_equal(first.open(), second.open())


def test_stored_features_match_direct_computation(folder):
    path, table = folder
    entry = _build(path, table)
    data = entry.open()
    assert data.shape == (6, W, 16) and data.dtype == np.float16
    wave = load_recording(path / "101_1b1_Al_sc_Meditron.wav", AUDIO)
    padded, clamped = extract_cycles(wave, [(0.4, 1.3), (1.3, 2.5)], AUDIO)
    assert clamped == 1
    ref = features_mod.cycle_features(padded, AUDIO, W).numpy()
    np.testing.assert_allclose(data[4:6].astype(np.float32), ref, atol=2e-2, rtol=2e-3)  # float16 storage


def test_config_change_or_touched_wav_invalidates(folder, counted):
    path, table = folder
    base = _build(path, table)
    other = _build(path, table, audio=AudioConfig(desired_length=0.5, n_mels=16, low_freq=50.0))
    assert not other.hit and other.path != base.path
    # normalisation is applied per item, so it does not belong to the key
    same = _build(path, table, audio=AudioConfig(desired_length=0.5, n_mels=16, mel_norm="none"))
    assert same.hit
    wav = path / "100_1b1_Al_sc_Meditron.wav"
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    n_before = counted["n"]
    touched = _build(path, table)
    assert not touched.hit and counted["n"] == n_before + len(table)
    changed_cycles = table.assign(CycleEnd=table["CycleEnd"] + 0.01)
    assert not _build(path, changed_cycles).hit


def test_failed_build_leaves_no_entry(folder, monkeypatch):
    path, table = folder

    def boom(wave, cfg):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(features_mod, "log_mel_fbank", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _build(path, table)
    assert not any((path / ".cache").iterdir())


def test_missing_wav_is_named(folder):
    path, table = folder
    (path / "101_1b1_Al_sc_Meditron.wav").unlink()
    with pytest.raises(FileNotFoundError, match="101_1b1_Al_sc_Meditron"):
        _build(path, table)


def test_waves_cache_and_feature_stats(folder):
    path, table = folder
    waves = ensure_cached("waves", table, path, AUDIO, path / ".cache", workers=0)
    assert waves.open().shape == (6, 8000)
    entry = _build(path, table)
    rows = np.array([0, 2, 3])
    mean, std = feature_stats(entry, rows)
    x = entry.open()[rows].astype(np.float64)
    assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std())
    assert feature_stats(entry, rows) == (mean, std)  # memoised


def test_parallel_build_equals_in_process(folder):
    path, table = folder
    serial = ensure_cached("features", table, path, AUDIO, path / "a", w=W, workers=0).open()
    parallel = ensure_cached("features", table, path, AUDIO, path / "b", w=W, workers=2).open()
    assert torch.equal(torch.from_numpy(np.array(serial)), torch.from_numpy(np.array(parallel)))


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_build_killed_midway_is_cleaned_up_by_the_next_build(folder, caplog):
    """A killed build leaves its temp folder (up to a whole feature set); the next build removes those of
    dead builds, and leaves a running build's folder and foreign folders it cannot judge alone."""
    import json
    import logging
    import socket
    import subprocess
    import sys
    import time

    path, table = folder
    cache = path / ".cache"
    cache.mkdir()
    # A real build killed mid-way (SIGKILL): its temp folder stays behind.
    script = ("import sys, time, pandas as pd; from pathlib import Path\n"
              "import ls.data.features as f\n"
              "from ls.data.cache import ensure_cached\nfrom ls.data.config import AudioConfig\n"
              "def hang(*a):\n    print('building', flush=True); time.sleep(600)\n"
              "f.cycle_features = hang\n"
              "t = pd.read_json(sys.argv[2])\n"
              "ensure_cached('features', t, sys.argv[1], AudioConfig(desired_length=0.5, n_mels=16),"
              " Path(sys.argv[1]) / '.cache', w=32, workers=0)\n")
    (path / "table.json").write_text(table.to_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(path / "table.json")],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "building"
    proc.kill()
    proc.wait()
    killed = list(cache.glob(".tmp-features-*"))
    assert len(killed) == 1 and (killed[0] / "data.f16").is_file()
    # ... an old-style folder (no owner file) of a dead process, untouched for a day, and one just written
    old = cache / f".tmp-features-0123abcd-{_dead_pid()}"
    old.mkdir()
    (old / "data.f16").write_bytes(b"\0" * 1000)
    day_ago = time.time() - 86400
    os.utime(old / "data.f16", (day_ago, day_ago))
    os.utime(old, (day_ago, day_ago))
    fresh = cache / f".tmp-features-4567cdef-{_dead_pid()}"
    fresh.mkdir()
    # ... a build running now in this process (other key) and one on another machine sharing the folder
    running = cache / f".tmp-waves-89ab-{os.getpid()}"
    running.mkdir()
    (running / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    remote = cache / ".tmp-features-cdef-4242"
    remote.mkdir()
    (remote / "owner.json").write_text(json.dumps({"host": "another-node", "pid": 4242}))

    caplog.set_level(logging.WARNING)
    _build(path, table)
    left = sorted(p.name for p in cache.glob(".tmp-*"))
    assert left == sorted([fresh.name, running.name, remote.name])
    assert caplog.text.count("left by a cache build that did not finish") == 2
    assert str(killed[0]) in caplog.text and str(old) in caplog.text


def test_a_read_only_cache_folder_is_one_clear_error(folder, monkeypatch):
    from ls.utils.io import WriteError

    path, table = folder

    def refuse(self, *a, **k):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(type(path), "mkdir", refuse)
    with pytest.raises(WriteError, match=r"cannot write the feature cache in .*\.cache: read-only file system; "
                                         r"set dataset.cache_dir"):
        _build(path, table)


def test_a_stale_build_removed_by_another_process_meanwhile_does_not_fail_the_build(folder, monkeypatch):
    """Two builds clean up the same killed build's folder at once: the one that finds it gone goes on."""
    import json
    import shutil
    import socket

    from ls.data import cache

    path, table = folder
    stale = path / ".cache" / f".tmp-features-0123abcd-{_dead_pid()}"
    stale.mkdir(parents=True)
    (stale / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid()}))
    real, verdicts = cache._is_stale, []

    def judged_then_removed_elsewhere(folder, now):
        verdicts.append(real(folder, now))
        shutil.rmtree(folder)  # the other process wins between the listing and the sizing
        return verdicts[-1]

    monkeypatch.setattr(cache, "_is_stale", judged_then_removed_elsewhere)
    entry = _build(path, table)
    assert entry.open().shape == (len(table), W, AUDIO.n_mels) and not stale.exists()
    assert verdicts == [True]  # judged stale (a dead process of this host), then gone before its sizing
