"""Known, expected warnings of the stack around us, reduced to one line.

On a machine without NVIDIA apex and Transformer Engine (every CPU machine), Megatron-Core warns from six modules
that it falls back to its PyTorch implementations, and megatron-core 0.16 warns about its own default
``cuda_graph_scope``. ``octo`` replaces them with one note; every other warning is shown as usual.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

FALLBACK = re.compile(r"(Transformer Engine and Apex are|Apex is) not installed")
"""Megatron-Core's fallback warnings (mixed_precision, optimizer, clip_grads, backends, gpt_layer_specs)."""
IGNORED = (re.compile(r"full scope is deprecated\. Use empty cuda_graph_scope"),)
"""Megatron-Core 0.16's warning about its own default, not about anything a recipe sets."""
NOTE = ("octo: note: NVIDIA apex / Transformer Engine not installed; Megatron-Core uses its PyTorch fallbacks "
        "(expected on CPU; on GPU use the NGC container)")


def quiet_known_warnings(stream=None) -> None:
    """Install (once per process) a ``warnings.showwarning`` that prints NOTE instead of the first fallback
    warning, drops the later ones and the IGNORED ones, and passes every other warning on unchanged. Only rank 0
    prints the note."""
    if getattr(warnings.showwarning, "_octo_quiet", False):
        return
    original = warnings.showwarning
    noted = []

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if FALLBACK.search(text):
            if not noted and os.environ.get("RANK", "0") == "0":
                print(NOTE, file=stream or sys.stderr)
            noted.append(text)
            return
        if any(p.search(text) for p in IGNORED):
            return
        original(message, category, filename, lineno, file, line)

    show._octo_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = show
