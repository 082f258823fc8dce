"""Manual garbage collection (Megatron-LM's ``--manual-gc`` semantics).

Python's collector runs when allocation counters cross thresholds, a different moment on every rank; a rank that
collects stalls the collectives of all the others. With ``train.manual_gc`` the automatic collector is off for the
run and every rank collects at the same points: once at the start, every ``manual_gc_interval`` steps (0: never),
fully before an evaluation (``manual_gc_eval``) and the young generation after it. The previous collector state is
restored at the end.
"""

from __future__ import annotations

import gc


class ManualGC:
    """``start`` / ``stop`` (or a ``with`` block) around the training loop; ``after_step`` after each step,
    ``before_eval`` / ``after_eval`` around evaluations."""

    def __init__(self, enabled: bool, interval: int = 0, at_eval: bool = True):
        self.enabled, self.interval, self.at_eval = enabled, interval, at_eval
        self._was_enabled = gc.isenabled()

    def start(self) -> "ManualGC":
        """Automatic collection off, one full collection now."""
        if self.enabled:
            self._was_enabled = gc.isenabled()
            gc.disable()
            gc.collect()
        return self

    def stop(self) -> None:
        """The automatic collector back as it was."""
        if self.enabled and self._was_enabled:
            gc.enable()

    def __enter__(self) -> "ManualGC":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def after_step(self, step: int) -> None:
        """``step``: steps taken so far in the stage (1-based)."""
        if self.enabled and self.interval and step % self.interval == 0:
            gc.collect()

    def before_eval(self) -> None:
        if self.enabled and self.at_eval:
            gc.collect()

    def after_eval(self) -> None:
        if self.enabled:
            gc.collect(generation=0)  # what the evaluation itself left behind


def manual_gc(recipe) -> ManualGC:
    t = recipe.train
    return ManualGC(t.manual_gc, t.manual_gc_interval, t.manual_gc_eval)
