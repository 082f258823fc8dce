"""Progress of a long conversion: tensors done, bytes done, throughput and ETA, at most one line every few seconds."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    raise AssertionError("unreachable")


class Progress:
    """Counts bytes and tensors against known totals and prints ``label: 12/200 tensors, 1.2/6.0 GiB, 150 MiB/s,
    ETA 32 s`` to ``stream`` at most every ``interval`` seconds, and once at ``finish``."""

    def __init__(self, label: str, total_bytes: int, total_items: int, *, stream: Optional[TextIO] = None,
                 interval: float = 5.0, quiet: bool = False):
        self.label, self.total_bytes, self.total_items = label, max(int(total_bytes), 1), total_items
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.quiet = interval, quiet
        self.bytes = self.items = 0
        self.start = self._last = time.perf_counter()

    def advance(self, nbytes: int, items: int = 0) -> None:
        """``nbytes`` more written; ``items`` tensors completed."""
        self.bytes += int(nbytes)
        self.items += items
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def finish(self) -> float:
        """Print the final line; return the elapsed seconds."""
        now = time.perf_counter()
        self._print(now, done=True)
        return now - self.start

    def _print(self, now: float, done: bool = False) -> None:
        if self.quiet:
            return
        elapsed = max(now - self.start, 1e-9)
        rate = self.bytes / elapsed
        line = (f"{self.label}: {self.items}/{self.total_items} tensors, {human_bytes(self.bytes)}/"
                f"{human_bytes(self.total_bytes)}, {human_bytes(rate)}/s")
        if done:
            line += f", done in {elapsed:.1f} s"
        elif rate > 0:
            line += f", ETA {max(self.total_bytes - self.bytes, 0) / rate:.0f} s"
        print(line, file=self.stream, flush=True)
