"""The one map between the dtype names recipes and commands use and torch dtypes."""

from __future__ import annotations

from typing import Dict

import torch

TORCH_DTYPES: Dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``precision.dtype`` / ``--dtype`` names (``auto`` aside) -> torch dtypes."""
HF_DTYPE_NAMES: Dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}
"""torch dtypes -> the names Hugging Face ``config.json`` files use (``torch_dtype``)."""
