"""Known, expected warnings of the stack around us, reduced to one line.

On a machine without NVIDIA apex and Transformer Engine (every CPU machine), Megatron-Core warns from six modules
that it falls back to its PyTorch implementations, and megatron-core 0.16 warns about its own default
``cuda_graph_scope``. ``octo`` drops them and prints one note once a command has succeeded (so an error stays
one line); every other warning is shown as usual.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import List

FALLBACK = re.compile(r"(Transformer Engine and Apex are|Apex is) not installed")
"""Megatron-Core's fallback warnings (mixed_precision, optimizer, clip_grads, backends, gpt_layer_specs)."""
IGNORED = (re.compile(r"full scope is deprecated\. Use empty cuda_graph_scope"),)
"""Megatron-Core 0.16's warning about its own default, not about anything a recipe sets."""
NOTE = (
    "octo: note: NVIDIA apex / Transformer Engine not installed; Megatron-Core uses its PyTorch fallbacks "
    "(expected on CPU; on GPU use the NGC container)"
)


_SEEN: List[str] = []


def quiet_known_warnings() -> None:
    """Install (once per process) a ``warnings.showwarning`` that records and drops the fallback warnings and
    drops the IGNORED ones, passing every other warning on unchanged."""
    if getattr(warnings.showwarning, "_octo_quiet", False):
        return
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if FALLBACK.search(text):
            _SEEN.append(text)
            return
        if any(p.search(text) for p in IGNORED):
            return
        original(message, category, filename, lineno, file, line)

    show._octo_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def print_note(stream=None) -> None:
    """NOTE, once, on rank 0, if a fallback warning was dropped."""
    if _SEEN and os.environ.get("RANK", "0") == "0":
        print(NOTE, file=stream or sys.stderr)
        _SEEN.clear()
