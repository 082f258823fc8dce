"""Hugging Face model directories: lazy reads of safetensors checkpoints, streaming writes of safetensors shards.

Reading opens a shard with ``safetensors.safe_open`` for each row block and closes it again: ``safe_open`` maps the
whole file, and the pages a read touches stay resident (and counted in RSS) until the mapping is closed, so a
handle kept open over a 5 GB shard would grow the process to the shard's size.

Writing streams: ``safetensors.torch.save_file`` needs every tensor of a shard in memory at once, so shards are
written here in the safetensors format directly (an 8-byte little-endian header length, a JSON header with each
tensor's dtype, shape and data offsets, padded with spaces to 8 bytes, then the raw little-endian data). The header
is known before any data because the converter knows every output shape in advance; the data then arrives in row
blocks. The files are read back with ``safetensors`` and ``transformers`` in the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from megatron_octo.convert.errors import ConvertError

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
_ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
# Tensors some checkpoints carry that are no weights (rotary buffers saved by old transformers versions).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

if sys.byteorder != "little":  # pragma: no cover - safetensors data is little-endian; so is every supported host
    raise ImportError("megatron_octo.convert writes safetensors data from memory and needs a little-endian host")


def read_json(path: Path, what: str) -> dict:
    """A JSON file as a dict; one-line ConvertError when missing or malformed."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConvertError(f"{path.parent} has no {path.name}: give a Hugging Face model directory ({what})") from None
    except json.JSONDecodeError as exc:
        raise ConvertError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): fix or re-download it"
        ) from None


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: Tuple[int, ...]
    dtype: torch.dtype


class HFCheckpoint:
    """A Hugging Face model directory: ``config.json`` and safetensors weights (one file or an index of shards).

    Opening reads only headers; ``read_rows`` reads one row range of one tensor from disk.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConvertError(f"--input {self.path} is not a directory: give a Hugging Face model directory")
        self.config = read_json(self.path / CONFIG, "config.json with the model's architecture")
        self.tensors: Dict[str, TensorInfo] = {}
        for file in self._weight_files():
            self.tensors.update(_read_header(file))

    def _weight_files(self) -> List[Path]:
        index, single = self.path / INDEX_FILE, self.path / SINGLE_FILE
        if index.is_file():
            weight_map = read_json(index, "safetensors index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConvertError(f"{index} has no weight_map: re-download the model")
            files = [self.path / name for name in sorted(set(weight_map.values()))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ConvertError(
                    f"{index.name} names {len(missing)} shard(s) missing from {self.path} (first: "
                    f"{missing[0]}): re-download the model"
                )
            return files
        if single.is_file():
            return [single]
        legacy = [p.name for p in self.path.glob("pytorch_model*.bin")]
        hint = (
            f"found {legacy[0]}: re-save it with save_pretrained(safe_serialization=True)"
            if legacy
            else "re-download the model"
        )
        raise ConvertError(
            f"{self.path} has no {SINGLE_FILE} or {INDEX_FILE}: only safetensors weights are read; {hint}"
        )

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of tensor ``name`` (dim 0), read from disk into a new tensor."""
        from safetensors import safe_open

        with safe_open(self.tensors[name].file, framework="pt") as f:
            return f.get_slice(name)[start:stop].contiguous()


def _read_header(file: Path) -> Dict[str, TensorInfo]:
    """Names, shapes and dtypes of a safetensors file, from its header only."""
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                dtype = _ST_DTYPES.get(sl.get_dtype())
                if dtype is None:
                    raise ConvertError(
                        f"{file.name}: tensor {name} has dtype {sl.get_dtype()}; only F32, BF16 and "
                        f"F16 weights are supported"
                    )
                out[name] = TensorInfo(file, tuple(sl.get_shape()), dtype)
    except ConvertError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt files
        raise ConvertError(
            f"{file} is not a readable safetensors file ({str(exc).splitlines()[0]}): re-download it"
        ) from None
    return out


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutTensor:
    name: str
    shape: Tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = torch.tensor([], dtype=self.dtype).element_size()
        for s in self.shape:
            n *= s
        return n


def plan_shards(tensors: Sequence[OutTensor], max_shard_bytes: int) -> List[Tuple[str, List[OutTensor]]]:
    """Tensors in order, grouped into shards of at most ``max_shard_bytes`` (a bigger tensor gets its own), with
    transformers' file names: ``model.safetensors`` alone, else ``model-0000i-of-0000n.safetensors``."""
    groups: List[List[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    if len(groups) == 1:
        return [(SINGLE_FILE, groups[0])]
    n = len(groups)
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups)]


def write_index(out_dir: Path, shards: Sequence[Tuple[str, Sequence[OutTensor]]]) -> None:
    """``model.safetensors.index.json`` (only for more than one shard, as transformers does)."""
    if len(shards) == 1:
        return
    weight_map = {t.name: file for file, group in shards for t in group}
    total = sum(t.nbytes for _, group in shards for t in group)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


class SafetensorsWriter:
    """One safetensors file written front to back: the header for ``tensors`` first, then each tensor's data in
    order, in row blocks (``write``). ``close`` checks that every byte the header promised was written."""

    def __init__(self, path: Path, tensors: Sequence[OutTensor]):
        header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in tensors:
            header[t.name] = {
                "dtype": _ST_NAMES[t.dtype],
                "shape": list(t.shape),
                "data_offsets": [offset, offset + t.nbytes],
            }
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self.path, self._pending = path, [(t, t.nbytes) for t in tensors]
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, block: torch.Tensor) -> int:
        """Append a row block of tensor ``name`` (the current one); returns the bytes written."""
        t, left = self._pending[0]
        if name != t.name or block.dtype != t.dtype:
            raise RuntimeError(f"{self.path.name}: got {name} ({block.dtype}), expected {t.name} ({t.dtype})")
        data = block.contiguous().view(-1).view(torch.uint8).numpy()
        if data.nbytes > left:
            raise RuntimeError(f"{self.path.name}: {name} received more than its {t.nbytes} bytes")
        self._file.write(data.data)  # the array's own memoryview: no copy
        left -= data.nbytes
        self._pending = self._pending[1:] if left == 0 else [(t, left)] + self._pending[1:]
        return data.nbytes

    def close(self) -> None:
        if self._pending:
            t, left = self._pending[0]
            raise RuntimeError(f"{self.path.name}: {t.name} is missing {left} bytes")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def tokenizer_in(directory) -> Optional[Path]:
    """``directory`` when it holds tokenizer files, else None."""
    if directory is None:
        return None
    directory = Path(directory)
    return directory if any((directory / n).is_file() for n in TOKENIZER_FILES) else None


def copy_tokenizer(src: Path, dst: Path) -> List[str]:
    """Copy the tokenizer files found in ``src`` to ``dst``; returns their names."""
    found = [name for name in TOKENIZER_FILES if (Path(src) / name).is_file()]
    for name in found:
        shutil.copy2(Path(src) / name, Path(dst) / name)
    return found


def token_ids(tokenizer_dir: Optional[Path]) -> Dict[str, int]:
    """bos / eos / pad token ids of a tokenizer directory (those it names): the token strings of
    tokenizer_config.json (or special_tokens_map.json) looked up in tokenizer.json. Read directly rather than
    through AutoTokenizer, whose class choice can add tokens (a Qwen2 tokenizer adds a pad token of its own)."""
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        return {}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    named: Dict[str, object] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the second wins
        path = Path(tokenizer_dir) / name
        if path.is_file():
            named.update(
                {k: v for k, v in read_json(path, name).items() if k in ("bos_token", "eos_token", "pad_token") and v}
            )
    ids = {}
    for key, value in named.items():
        content = value.get("content") if isinstance(value, dict) else value
        token_id = tok.token_to_id(content) if isinstance(content, str) else None
        if token_id is not None:
            ids[f"{key}_id"] = token_id
    return ids


def merged_config(original: Optional[Mapping], derived: Mapping, tokens: Mapping[str, int]) -> dict:
    """config.json: the ``derived`` keys (``family.to_hf`` of the checkpoint's ModelConfig: the architecture) over
    the ``original`` config.json, if the checkpoint kept one (for its other keys).

    Token ids (``*_token_id``) come from the original config first (even when null there), then the tokenizer
    (``tokens``), then ``derived`` (a preset's ids), so an instruct model's list of EOS ids survives. Keys of the
    transformers-5 layout that ``derived`` states in the Hub layout (``rope_parameters``, ``dtype``) are dropped from
    the original so the file does not say the same thing twice.
    """
    original = dict(original or {})
    out = {k: v for k, v in original.items() if k not in ("rope_parameters", "dtype", "transformers_version")}
    out.update(derived)
    for key in {k for k in (*original, *tokens, *derived) if k.endswith("_token_id")}:
        for source in (original, tokens, derived):
            if key in source:  # an explicit null in the original config stays null
                out[key] = source[key]
                break
    return dict(sorted(out.items()))
