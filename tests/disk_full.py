"""A full disk, simulated at the file write: ``filling_open`` replaces ``open`` in the module that writes (monkeypatch
its module global) and lets files whose path contains ``match`` take ``room`` bytes, then raises
``OSError(ENOSPC)`` from ``write`` as the kernel's full file system does. Other files open as usual.

Forked children (Megatron-Core's checkpoint write workers) inherit the patched module, so the error starts where a
real one would: in the worker's ``write``."""

from __future__ import annotations

import builtins
import errno
import os


class _FillingFile:
    def __init__(self, f, path: str, room: list):
        self._f, self._path, self._room = f, path, room

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B")) if not isinstance(data, str) else len(data.encode())
        if n > self._room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        self._room[0] -= n
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def filling_open(match: str, room: int = 0):
    """An ``open`` that fills up after ``room`` bytes (shared by every file it opens) for paths containing
    ``match``, written in a binary or text write mode."""
    left = [room]

    def fake_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        if match in str(file) and any(m in mode for m in "wax+"):
            return _FillingFile(f, str(file), left)
        return f

    return fake_open
