"""atomic_write_text: readers see the old file or the whole new one, and no temporary file is left behind."""

from __future__ import annotations

import os

import pytest

from megatron_octo.utils.io import atomic_write_text


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_writes_a_new_file(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert _names(tmp_path) == ["out.txt"]


def test_creates_missing_parent_directories(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert _names(target.parent) == ["out.json"]


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old contents that are longer than the new ones\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _names(tmp_path) == ["out.txt"]


def test_accepts_a_string_path(tmp_path):
    atomic_write_text(str(tmp_path / "s.txt"), "x")
    assert (tmp_path / "s.txt").read_text() == "x"


def test_failed_rename_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert _names(tmp_path) == ["out.txt"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def broken_fsync(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert _names(tmp_path) == ["out.txt"]


def test_interrupt_during_write_leaves_no_temp(tmp_path, monkeypatch):
    # KeyboardInterrupt is not an Exception: the clean-up must still run.
    target = tmp_path / "out.txt"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert _names(tmp_path) == []


def dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_temps_removes_only_dead_writers_outputs(tmp_path):
    import os

    from megatron_octo.utils.io import remove_stale_temps

    out = tmp_path / "model"
    dead = tmp_path / f".model.tmp-{dead_pid()}"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "shard").write_text("partial")
    dead_file = tmp_path / f".model.tmp-{dead_pid()}"
    dead_file.write_text("partial")
    live = tmp_path / f".model.tmp-{os.getppid()}"  # a running writer (the test runner's parent)
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead_pid()}"
    other.mkdir()
    assert sorted(remove_stale_temps(out)) == sorted([dead, dead_file])
    assert not dead.exists() and not dead_file.exists() and live.is_dir() and other.is_dir()
    assert remove_stale_temps(tmp_path / "absent" / "x") == []
