"""Older Megatron-Core ``zarr`` distributed checkpoints read through TensorStore, as Megatron-Core's own zarr loader
did (``dist_checkpointing/strategies/zarr.py``, removed in later versions).

Layout: ``metadata.json`` (``sharded_backend: zarr``), ``common.pt``, and one zarr array per sharded tensor key, in
a directory named by the key, holding the *global* tensor (stacked layer keys with their leading layer axis).
Megatron-Core stored bfloat16 arrays with TensorStore's ``bfloat16`` zarr dtype, which numpy cannot name; they are
read as raw 16-bit words and reinterpreted. ``ZarrCheckpoint`` serves what ``sources.McoreRows`` asks of a reader.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import torch

from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import McoreTensor

_NUMPY_TO_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _open(path: Path):
    import tensorstore as ts

    return ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}, open=True).result()


class ZarrCheckpoint:
    """Global tensors of a zarr checkpoint, read one row range at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            import tensorstore  # noqa: F401
        except ImportError:
            raise ConvertError(
                f"{self.path} is a zarr checkpoint, which is read through TensorStore: pip install tensorstore"
            ) from None
        self._arrays: Dict[str, object] = {}

    def _array(self, key: str):
        if key not in self._arrays:
            where = self.path / key
            if not (where / ".zarray").is_file():
                return None
            try:
                self._arrays[key] = _open(where)
            except Exception as exc:  # TensorStore raises ValueError / its own status errors
                raise ConvertError(f"{where}: TensorStore cannot open it ({str(exc)[:200]})") from None
        return self._arrays[key]

    def tensor_meta(self, key: str):
        arr = self._array(key)
        if arr is None:
            return None
        dtype = _NUMPY_TO_TORCH.get(str(arr.dtype.name))
        if dtype is None:
            raise ConvertError(f"{self.path / key}: dtype {arr.dtype.name} is not a weight dtype (fp32/bf16/fp16)")
        return SimpleNamespace(size=torch.Size(arr.shape), properties=SimpleNamespace(dtype=dtype))

    def row_boundaries(self, tensor: McoreTensor) -> List[int]:
        return [0]

    def read(self, tensor: McoreTensor, start: int, stop: int) -> torch.Tensor:
        arr = self._array(tensor.key)
        view = arr[tensor.layer, start:stop] if tensor.layer is not None else arr[start:stop]
        data = view.read().result()
        if str(arr.dtype.name) == "bfloat16":  # numpy has no bfloat16: the 16-bit words, reinterpreted
            return torch.from_numpy(data.view("uint16").astype("int16")).view(torch.bfloat16)
        return torch.from_numpy(data.copy())
