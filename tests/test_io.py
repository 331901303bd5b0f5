"""ls.utils.io: atomic writes get the mode open() would give, and a failed write names the path and the reason
(no space left, read-only) whatever layer hit it; file kinds and torch.load messages for checkpoints."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
import torch

from ls.utils import io


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, mask, expected):
    from ls.engine.checkpoint import save_checkpoint

    with _umask(mask):
        io.atomic_write_text(tmp_path / "a.txt", "x")
        io.atomic_write_bytes(tmp_path / "b.bin", b"x")
        io.atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pt")
        save_checkpoint({"format": 2, "version": "0", "variant": "ast", "config": {}, "model": {},
                         "metadata_encoder": None, "metadata_spec": None, "class_names": [], "thresholds": []},
                        tmp_path / "best.pt")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives, for comparison
    assert _mode(plain) == expected
    for name in ("a.txt", "b.bin", "c.pt", "best.pt"):
        assert _mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "best.pt", "c.pt", "plain.txt"]


def _dev_full_mkstemp(monkeypatch, tmp_path):
    """Temp files opened on /dev/full: every write fails with the kernel's ENOSPC, as on a full disk."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    real = io.tempfile.mkstemp

    def mkstemp(prefix="", suffix="", dir=None):
        if prefix.startswith((".best.pt", ".last.pt", ".c.pt")):
            return os.open("/dev/full", os.O_WRONLY), str(tmp_path / f"{prefix}fake{suffix}")
        return real(prefix=prefix, suffix=suffix, dir=dir)

    monkeypatch.setattr(io.tempfile, "mkstemp", mkstemp)


def test_a_full_disk_under_torch_save_is_named_as_such(tmp_path, monkeypatch):
    """torch.save on a full disk raises 'enforce fail at inline_container.cc'; ls says what happened."""
    _dev_full_mkstemp(monkeypatch, tmp_path)
    with pytest.raises(io.WriteError) as info:
        io.atomic_torch_save({"w": torch.zeros(100_000)}, tmp_path / "c.pt")
    msg = str(info.value)
    assert msg == f"cannot write {tmp_path / 'c.pt'}: no space left on device"
    assert "inline_container" not in msg and not (tmp_path / "c.pt").exists()


def test_a_read_only_folder_is_named_as_such(readonly_dir):
    with pytest.raises(io.WriteError, match=r"cannot write .*ro/sub/x.txt: (read-only file system|permission denied)"):
        io.atomic_write_text(readonly_dir / "sub" / "x.txt", "x")
    with pytest.raises(io.WriteError, match=r"cannot write .*ro/x.pt: (read-only file system|permission denied)"):
        io.atomic_torch_save({"w": torch.zeros(2)}, readonly_dir / "x.pt")


def test_a_really_full_disk_is_named_and_leaves_no_temp_file(tiny_disk):
    with pytest.raises(io.WriteError, match=r"cannot write .*best.pt: no space left on device"):
        io.atomic_torch_save({"w": torch.zeros(1_000_000)}, tiny_disk / "best.pt")
    assert list(tiny_disk.iterdir()) == []


def test_errors_raised_by_the_writer_itself_pass_through(tmp_path):
    with pytest.raises(ZeroDivisionError), io.atomic_open(tmp_path / "x.txt", "w") as fh:
        fh.write("a")
        _ = 1 / 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory", "other.csv"),
                                   PermissionError(13, "Permission denied", "/etc/shadow"),
                                   RuntimeError("cannot write the report: no rows")])
def test_the_callers_own_errors_are_not_taken_for_write_failures(tmp_path, error):
    """An OSError of another file, or any RuntimeError mentioning 'write', raised by the caller's code in the
    block is the caller's: it passes through as it is, not as 'cannot write x.txt'."""
    with pytest.raises(type(error)) as info, io.atomic_open(tmp_path / "x.txt", "w") as fh:
        fh.write("a")
        raise error
    assert info.value is error and not isinstance(info.value, io.WriteError)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_of_the_file_itself_is_a_write_error_whoever_wraps_it(tmp_path, monkeypatch):
    _dev_full_mkstemp(monkeypatch, tmp_path)
    full = r"cannot write .*c.pt: no space left on device"
    with pytest.raises(io.WriteError, match=full), io.atomic_open(tmp_path / "c.pt", "w") as fh:
        fh.write("x" * 100_000)  # more than the buffer: the write itself fails
    with pytest.raises(io.WriteError, match=full), io.atomic_open(tmp_path / "c.pt", "wb") as fh:
        try:
            fh.write(b"x" * 100_000)
        except OSError as exc:  # a writer that reports the failure in its own words (as torch does)
            raise RuntimeError("serializer gave up") from exc
    with pytest.raises(io.WriteError, match=full), io.atomic_open(tmp_path / "c.pt", "w") as fh:
        fh.write("x")  # buffered: the failure comes with the flush after the block
    assert not (tmp_path / "c.pt").exists()


def test_file_kinds(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "z.pt")
    (tmp_path / "t.pt").write_text("epoch 1 loss 0.5\n")
    (tmp_path / "e.pt").write_bytes(b"")
    (tmp_path / "b.pt").write_bytes(bytes(range(256)) * 4)
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "s.safetensors"))
    kinds = {p.name: io.file_kind(p) for p in tmp_path.iterdir()}
    assert kinds == {"z.pt": "torch-zip", "t.pt": "text", "e.pt": "empty", "b.pt": "unknown",
                     "s.safetensors": "safetensors"}
    assert io.file_kind(tmp_path) == "directory"


def test_torch_load_messages_never_pass_on_the_weights_only_false_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"a": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception) as info:
        torch.load(tmp_path / "evil.pt", weights_only=True)
    assert "weights_only` set to `False`" in str(info.value)  # what torch says ...
    msg = io.torch_load_problem(info.value)
    assert "weights_only" not in msg and "False" not in msg  # ... and what ls says
    assert "arbitrary code" in msg and "system" in msg


def test_ctrl_c_in_the_middle_of_torch_save_stays_a_ctrl_c(tmp_path, monkeypatch):
    """Ctrl-C (or a study's SIGTERM) while torch.save writes: torch's zip writer then fails on close with its own
    RuntimeError, which would hide the interrupt (the run then ends as FAILED, not KILLED). The interrupt comes
    out, the old file stays and no temp file is left."""
    real = io._record_write_failures

    def interrupt_on_third_write(fh, failures):
        real(fh, failures)
        write, calls = fh.write, []

        def write_then_interrupt(data):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return write(data)

        fh.write = write_then_interrupt

    target = tmp_path / "last.pt"
    io.atomic_torch_save({"w": torch.ones(3)}, target)
    monkeypatch.setattr(io, "_record_write_failures", interrupt_on_third_write)
    with pytest.raises(KeyboardInterrupt) as info:
        io.atomic_torch_save({"w": torch.zeros(100_000), "b": torch.zeros(10)}, target)
    assert type(info.value) is KeyboardInterrupt
    assert torch.equal(torch.load(target)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
