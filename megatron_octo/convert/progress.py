"""Progress of a long conversion over the shared implementation (``utils.progress``): bytes written against the
total, tensors done as the line's field, throughput and ETA; a bar on a terminal, a line every few seconds in logs."""

from __future__ import annotations

from typing import Optional, TextIO

from megatron_octo.utils.progress import Progress as _Progress
from megatron_octo.utils.progress import human_bytes

__all__ = ["Progress", "human_bytes"]


class Progress:
    """Counts bytes and tensors against known totals (``label: 1.2 GiB/6.0 GiB | 12/200 tensors | 150 MiB/s |
    elapsed | ETA``), printed at most every ``interval`` seconds off a terminal, and once at ``finish``."""

    def __init__(
        self,
        label: str,
        total_bytes: int,
        total_items: int,
        *,
        stream: Optional[TextIO] = None,
        interval: float = 5.0,
        quiet: bool = False,
    ):
        self.total_items, self.items = total_items, 0
        self._p = _Progress(max(int(total_bytes), 1), label, unit="B", stream=stream, interval=interval, quiet=quiet)
        self.start = self._p.start

    @property
    def bytes(self) -> int:
        return self._p.done

    def advance(self, nbytes: int, items: int = 0) -> None:
        """``nbytes`` more written; ``items`` tensors completed."""
        self.items += items
        self._p.update(int(nbytes), f"{self.items}/{self.total_items} tensors")

    def finish(self) -> float:
        """Print the final line; return the elapsed seconds."""
        self._p.fields = f"{self.items}/{self.total_items} tensors"
        return self._p.close()
