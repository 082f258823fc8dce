"""Output discipline: write under a temporary name, then rename into place; never overwrite silently."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Union

from megatron_octo.errors import OctoError


class OutputExistsError(OctoError, FileExistsError):
    """An output already exists and the caller did not ask to overwrite it."""


class OutputPathError(OctoError):
    """An output that cannot be written where the user pointed: a file where a directory is wanted, or a
    directory this process may not write (permission bits, a read-only file system)."""


class DiskFullError(OctoError):
    """The file system filled up (or hit its quota) while an output was written; the message says which path and
    how much space is left, and that nothing was left under the output's final name."""


def check_writable_dir(path: Union[str, Path], flag: str, given: Optional[str] = None) -> None:
    """Refuse, before anything is written, a directory output ``path`` (the value of ``flag``; ``given``: what the
    user typed, when ``path`` was derived from it) that cannot be created or written: it is a file, one of its
    parents is a file, or the nearest existing one of them is not writable by this process.

    Writability is ``os.access(W_OK | X_OK)``: it answers for the real user, so root passes permission bits (as it
    would when writing) but not a read-only file system (EROFS)."""
    path = Path(path)
    shown = given if given is not None else str(path)
    existing = next((p for p in [path, *path.absolute().parents] if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {shown}: {existing} is a file, not a directory: pick another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{flag} {shown}: {existing} is not writable (permissions or a read-only file system): pick another "
            f"{flag} or make it writable"
        )


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _related(exc: BaseException) -> list:
    """``exc`` and every exception behind it: ``__cause__``/``__context__`` and torch.distributed.checkpoint's
    ``CheckpointException.failures`` (each rank's exception, or (exception, traceback))."""
    seen: set = set()
    todo: List[Optional[BaseException]] = [exc]
    out: List[BaseException] = []
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            todo.extend(f[0] if isinstance(f, tuple) else f for f in failures.values())
        todo.extend([e.__cause__, e.__context__])
    return out


def disk_full_reason(exc: BaseException) -> Optional[str]:
    """The reason ("No space left on device" / "Disk quota exceeded") when that is what is behind ``exc``, else
    None: an ``OSError`` with ENOSPC/EDQUOT anywhere behind it, or (an error that crossed a process boundary as text
    only, e.g. from Megatron-Core's checkpoint writer workers) a message that says so."""
    related = _related(exc)
    for e in related:
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return os.strerror(e.errno)
    for e in related:
        for code in _NO_SPACE:
            if os.strerror(code) in str(e) or f"[Errno {code}]" in str(e):
                return os.strerror(code)
    return None


def free_bytes(path: Union[str, Path]) -> Optional[int]:
    """Bytes free on the file system of ``path`` (or of its nearest existing parent); None when it cannot be asked."""
    path = Path(path).absolute()
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def free_space(path: Union[str, Path]) -> str:
    """``free_bytes`` spelled for a message, e.g. ``12.0 KiB``; ``unknown`` when it cannot be asked."""
    from megatron_octo.utils.progress import human_bytes

    free = free_bytes(path)
    return "unknown" if free is None else human_bytes(free)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list:
    """Remove the hidden ``.NAME.tmp-PID`` outputs beside ``path`` (named ``NAME``) left by a killed writer: those
    whose process is no longer running on this host. Returns what was removed."""
    import re

    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp-(\d+)$")
    removed: list = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
