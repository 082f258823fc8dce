"""Progress of long work, one implementation for every command (preprocess, convert, eval, training, RL).

On a terminal: a tqdm bar (count, rate, elapsed, ETA, the caller's fields). Elsewhere (a log file, a pipe, Slurm
output): plain lines, one every ``interval`` seconds or every ``every`` updates, and a last one on ``close`` -- never
a carriage return. ``format_duration`` and ``human_bytes`` are the shared spellings of times and sizes.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1h02m05s``; ``?`` when unknown (not finite)."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    raise AssertionError("unreachable")


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts ``total`` units of work under a label.

    ``update(n, fields)`` (or calling the object with ``n``, the generation backends' callback) advances by
    ``n``; ``fields`` is the caller's own part of the line (``loss 2.31 | lr 3e-4``). ``unit="B"`` shows sizes
    and byte rates. ``initial`` units were done before this process (a resumed run): the rate and ETA count only
    this process's work. ``bar`` None picks a tqdm bar on a terminal and plain lines elsewhere; False always
    prints lines. ``every`` prints a line every that many updates (training's log interval), else one per
    ``interval`` seconds. ``quiet`` prints nothing.
    """

    def __init__(
        self,
        total: int,
        label: str,
        unit: Optional[str] = "items",
        *,
        initial: int = 0,
        stream: Optional[TextIO] = None,
        bar: Optional[bool] = None,
        interval: float = 10.0,
        every: Optional[int] = None,
        show_rate: bool = True,
        quiet: bool = False,
    ):
        self.total, self.label, self.unit = int(total), label, unit
        self.done = self.initial = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.every, self.show_rate, self.quiet = interval, every, show_rate, quiet
        self.fields = ""
        self.start = self._last = time.monotonic()
        self._updates = 0
        self._closed = False
        self._bar = None
        if not quiet and (bar if bar is not None else is_terminal(self.stream)):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=label,
                unit=unit or "it",
                unit_scale=unit == "B",
                unit_divisor=1024,
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.5,
                leave=True,
            )

    def __call__(self, n: int = 1) -> None:
        self.update(n)

    def update(self, n: int = 1, fields: Optional[str] = None) -> None:
        self.done += int(n)
        self._updates += 1
        if fields is not None:
            self.fields = fields
        if self.quiet:
            return
        if self._bar is not None:
            if fields is not None:
                self._bar.set_postfix_str(fields, refresh=False)
            self._bar.update(int(n))
            return
        now = time.monotonic()
        due = (self._updates % self.every == 0) if self.every else (now - self._last >= self.interval)
        if due or (self.every and self.done >= self.total):
            self._last = now
            self._print(now)

    def finish(self, fields: Optional[str] = None) -> float:
        """All ``total`` units done: advance to the end without a line of its own, then ``close``."""
        if fields is not None:
            self.fields = fields
        if self._bar is not None:
            self._bar.set_postfix_str(self.fields, refresh=False)
            self._bar.update(max(self.total - self.done, 0))
        self.done = max(self.done, self.total)
        return self.close()

    def close(self, final: bool = True) -> float:
        """Finish: the bar is closed, or (``final``) a last "done in" line printed; returns the elapsed seconds."""
        now = time.monotonic()
        if not self._closed and not self.quiet:
            if self._bar is not None:
                self._bar.close()
            elif final:
                self._print(now, done=True)
        self._closed = True
        return now - self.start

    def eta(self, now: Optional[float] = None) -> float:
        """Seconds left at this process's rate (inf before the first unit)."""
        elapsed = (now or time.monotonic()) - self.start
        ran = self.done - self.initial
        return elapsed / ran * max(self.total - self.done, 0) if ran > 0 and elapsed > 0 else float("inf")

    def line(self, now: Optional[float] = None, done: bool = False) -> str:
        """The plain progress line."""
        now = now or time.monotonic()
        elapsed = max(now - self.start, 1e-9)
        if self.unit is None:  # "step 12/500"
            parts = [f"{self.label} {self.done}/{self.total}"]
        elif self.unit == "B":
            parts = [f"{self.label}: {human_bytes(self.done)}/{human_bytes(self.total)}"]
        else:
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            parts = [f"{self.label}: {self.done}/{self.total} {self.unit}{pct}"]
        if self.fields:
            parts.append(self.fields)
        if self.show_rate:
            rate = (self.done - self.initial) / elapsed
            parts.append(f"{human_bytes(rate)}/s" if self.unit == "B" else f"{rate:.2f} {self.unit or 'steps'}/s")
        if done:
            parts.append(f"done in {format_duration(elapsed)}")
        else:
            parts += [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(self.eta(now))}"]
        return " | ".join(parts)

    def _print(self, now: float, done: bool = False) -> None:
        self.stream.write(self.line(now, done) + "\n")
        self.stream.flush()
