"""Megatron-Core ``torch_dist`` checkpoints written and read one tensor piece at a time, without building a model.

The torch_dist format is ``torch.distributed.checkpoint`` (DCP) storage of *global* tensors: ``.metadata`` (each
key's global shape, dtype and stored chunks), ``__*.distcp`` data files, plus Megatron-Core's ``metadata.json``
(backend and version) and ``common.pt`` (the non-tensor state, an empty dict for a GPTModel). Any chunking of a
global tensor is valid: a load reads whatever stored chunks overlap the shard a rank needs, so a checkpoint written
here in row blocks loads under every TP/PP layout.

Writing goes through DCP's own ``save`` with a planner that lists every chunk from shapes alone and produces a
chunk's data only when the writer asks for it (``resolve_data``); ``FileSystemWriter`` with one file per chunk
then holds one chunk at a time (with one file per rank it keeps every chunk it wrote alive until the file ends).

Reading uses DCP's ``FileSystemReader`` and ``create_read_items_for_chunk_list``: one stored chunk at a time into
a small cache, from which any row range of any layer is cut. Keys not asked for (optimizer state, ``_extra_state``)
are never read.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch.distributed.checkpoint import CheckpointException, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import McoreTensor

KEY_PREFIX = ""
"""Prefix of the model's keys in written checkpoints: none, the names GPTModel declares, as ``training.checkpoint``
saves them (from the model unwrapped from DDP) and as Megatron-LM writes them. Readers also accept a prefix made of
``module.`` (what the sharded state dict of a DDP-wrapped chunk would carry) or ``model.`` (NeMo's
``model_weights``, see ``convert.nemo``)."""
_PREFIX_RE = re.compile(r"^((?:module\.|model\.)*)decoder\.final_layernorm\.weight$")
COMMON_FILE = "common.pt"
MCORE_CONFIG = "metadata.json"
MCORE_CONFIG_FIELDS = {
    "sharded_backend": "torch_dist",
    "sharded_backend_version": 1,
    "common_backend": "torch",
    "common_backend_version": 1,
}


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of one layer's tensor: one stored chunk."""

    tensor: McoreTensor
    start: int
    stop: int
    dtype: torch.dtype
    num_layers: int

    @property
    def offsets(self) -> Tuple[int, ...]:
        rest = (0,) * (len(self.tensor.shape) - 1)
        lead = () if self.tensor.layer is None else (self.tensor.layer,)
        return (*lead, self.start, *rest)

    @property
    def sizes(self) -> Tuple[int, ...]:
        lead = () if self.tensor.layer is None else (1,)
        return (*lead, self.stop - self.start, *self.tensor.shape[1:])

    @property
    def global_shape(self) -> Tuple[int, ...]:
        lead = () if self.tensor.layer is None else (self.num_layers,)
        return (*lead, *self.tensor.shape)

    @property
    def nbytes(self) -> int:
        n = torch.tensor([], dtype=self.dtype).element_size()
        for s in self.sizes:
            n *= s
        return n

    def write_item(self, prefix: str) -> WriteItem:
        offsets = torch.Size(self.offsets)
        return WriteItem(
            index=MetadataIndex(prefix + self.tensor.key, offsets),
            type=WriteItemType.SHARD,
            tensor_data=TensorWriteData(
                chunk=ChunkStorageMetadata(offsets=offsets, sizes=torch.Size(self.sizes)),
                properties=TensorProperties(dtype=self.dtype),
                size=torch.Size(self.global_shape),
            ),
        )


def _empty_extra_state() -> io.BytesIO:
    """What Megatron-Core stores for a ShardedObject: ``torch.save`` of the list of its data ([None] here; TE reads
    None as "no FP8 metadata")."""
    buf = io.BytesIO()
    torch.save([None], buf)
    buf.seek(0)
    return buf


class StreamingSavePlanner(DefaultSavePlanner):
    """A DCP save planner whose write items come from ``pieces`` and ``object_keys`` (not from a state dict) and
    whose data is produced by ``produce(piece)`` at the moment the writer stores that piece. Every key gets
    ``prefix``."""

    def __init__(
        self, pieces: Sequence[Piece], object_keys: Sequence[str], produce: Callable[[Piece], torch.Tensor], prefix: str
    ):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._prefix = prefix
        self._pieces = {(prefix + p.tensor.key, p.offsets): p for p in pieces}
        self._object_keys = [prefix + key for key in object_keys]
        self._produce = produce

    def create_local_plan(self) -> SavePlan:
        items = [p.write_item(self._prefix) for p in self._pieces.values()]
        items += [WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO) for key in self._object_keys]
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem):
        if write_item.type == WriteItemType.BYTE_IO:
            return _empty_extra_state()
        offset = write_item.index.offset
        assert offset is not None  # every tensor write item carries its chunk's offset
        piece = self._pieces[(write_item.index.fqn, tuple(offset))]
        data = self._produce(piece)
        want = piece.sizes
        data = data.reshape(want) if data.numel() == _numel(want) else data
        if tuple(data.shape) != want or data.dtype != piece.dtype:
            raise RuntimeError(
                f"{piece.tensor.label} rows {piece.start}:{piece.stop}: produced "
                f"{tuple(data.shape)} {data.dtype}, planned {want} {piece.dtype}"
            )
        return data.contiguous()


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def write_checkpoint(
    out_dir: Path,
    pieces: Sequence[Piece],
    object_keys: Sequence[str],
    produce: Callable[[Piece], torch.Tensor],
    prefix: str = KEY_PREFIX,
    common: Optional[dict] = None,
) -> None:
    """Write a complete torch_dist checkpoint of ``pieces`` (and empty ``_extra_state`` objects under
    ``object_keys``) into the existing empty directory ``out_dir``; every key gets ``prefix``; ``common`` is the
    non-tensor state (common.pt; empty by default)."""
    from torch.distributed.checkpoint import state_dict_saver

    # No fsync per file (it would stall every chunk on the disk); fsync_tree syncs all files once at the end,
    # when the kernel has written most of them back already, and before the caller renames the directory.
    writer = FileSystemWriter(str(out_dir), single_file_per_rank=False, sync_files=False, thread_count=1)
    planner = StreamingSavePlanner(pieces, object_keys, produce, prefix)
    with warnings.catch_warnings():
        # DCP warns that it saves in a single process because no process group exists: that is the intent.
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        try:
            state_dict_saver.save({}, storage_writer=writer, planner=planner, no_dist=True)
        except CheckpointException as exc:  # DCP wraps whatever failed (a ConvertError, a full disk, Ctrl-C)
            raise next(iter(exc.failures.values()))[0] from None
    write_megatron_files(out_dir, common)
    fsync_tree(out_dir)


def fsync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` and the directory entries to disk."""
    for path in sorted(Path(directory).rglob("*")) + [Path(directory)]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_megatron_files(out_dir: Path, common: Optional[dict] = None) -> None:
    """``common.pt`` (``common``: a GPTModel's sharded state dict has no non-tensor state, so by default an empty
    dict; Megatron-LM adds its args, see ``convert.megatron_lm.common_state``) and ``metadata.json`` naming the
    torch_dist backend, as ``dist_checkpointing.save`` writes them (``json.dump`` of Megatron-Core's
    ``CheckpointingConfig``; spelled out here because importing megatron.core costs seconds; the tests compare
    both files with a real save)."""
    torch.save(dict(common or {}), Path(out_dir) / COMMON_FILE)
    with open(Path(out_dir) / MCORE_CONFIG, "w") as f:
        json.dump(MCORE_CONFIG_FIELDS, f)


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


class _ChunkPlanner(LoadPlanner):
    """Loads exactly one stored chunk of one key into ``dest``."""

    def __init__(self, fqn: str, md: TensorStorageMetadata, chunk: ChunkStorageMetadata, dest: torch.Tensor):
        self.fqn, self.md, self.chunk, self.dest = fqn, md, chunk, dest

    def set_up_planner(self, state_dict, metadata=None, is_coordinator=False) -> None:
        pass

    def create_local_plan(self) -> LoadPlan:
        return LoadPlan(create_read_items_for_chunk_list(self.fqn, self.md, [self.chunk]))

    def create_global_plan(self, global_plan):
        return global_plan

    def finish_plan(self, central_plan):
        return central_plan

    def load_bytes(self, read_item, value) -> None:
        raise RuntimeError("no byte objects are read")

    def resolve_tensor(self, read_item) -> torch.Tensor:
        out = self.dest
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            out = out.narrow(dim, start, length)
        return out

    def commit_tensor(self, read_item, tensor) -> None:
        pass


class DistCheckpoint:
    """Lazy reader of a torch_dist checkpoint directory: row ranges of single layers, one stored chunk read at a
    time; the most recent chunks are cached (up to ``cache_bytes``, and always the last one)."""

    def __init__(self, path: Path, cache_bytes: int = 128 << 20):
        self.path = Path(path)
        try:
            self._reader = FileSystemReader(str(self.path))
            self.metadata = self._reader.read_metadata()
        except FileNotFoundError:
            raise ConvertError(f"{self.path} has no .metadata: not a Megatron-Core torch_dist checkpoint") from None
        self._reader.set_up_storage_reader(self.metadata, True)
        self.prefix = detect_prefix(self.metadata.state_dict_metadata, self.path)
        self._cache: "OrderedDict[Tuple[str, Tuple[int, ...]], torch.Tensor]" = OrderedDict()
        self._cache_bytes = cache_bytes

    def tensor_meta(self, key: str) -> Optional[TensorStorageMetadata]:
        """Metadata of the model tensor ``key`` (as GPTModel declares it, without the prefix), or None."""
        md = self.metadata.state_dict_metadata.get(self.prefix + key)
        return md if isinstance(md, TensorStorageMetadata) else None

    def _stored(self, key: str) -> TensorStorageMetadata:
        """``tensor_meta`` of a tensor the plan says is there; a ConvertError when the checkpoint lacks it."""
        md = self.tensor_meta(key)
        if md is None:
            raise ConvertError(f"{self.path} lacks the tensor {self.prefix + key}")
        return md

    def _load_chunk(self, key: str, chunk: ChunkStorageMetadata) -> torch.Tensor:
        cache_key = (key, tuple(chunk.offsets))
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        md = self._stored(key)
        dest = torch.empty(tuple(chunk.sizes), dtype=md.properties.dtype)
        planner = _ChunkPlanner(self.prefix + key, md, chunk, dest)
        try:
            self._reader.read_data(planner.create_local_plan(), planner).wait()
        except (EOFError, OSError, RuntimeError, ValueError) as exc:  # a truncated or damaged .distcp shard
            reason = " ".join([type(exc).__name__, *(str(exc).strip().splitlines() or [""])[:1]]).strip()
            raise ConvertError(
                f"{self.path}: cannot read {self.prefix + key} ({reason[:120]}): the checkpoint is "
                "truncated or damaged; use another step (DIR:STEP) or copy it again"
            ) from None
        self._cache[cache_key] = dest
        while len(self._cache) > 1 and sum(t.nbytes for t in self._cache.values()) > self._cache_bytes:
            self._cache.popitem(last=False)
        return dest

    def row_boundaries(self, tensor: McoreTensor) -> List[int]:
        """Row offsets where stored chunks of this layer's tensor start (always including 0)."""
        md, lead = self._stored(tensor.key), _lead(tensor)
        starts = {0}
        for c in md.chunks:
            if tensor.layer is None or c.offsets[0] <= tensor.layer < c.offsets[0] + c.sizes[0]:
                starts.add(int(c.offsets[lead]))
        return sorted(starts)

    def read(self, tensor: McoreTensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of layer ``tensor.layer`` of ``tensor.key`` as stored (its dtype), all columns."""
        md, lead = self._stored(tensor.key), _lead(tensor)
        layer = () if tensor.layer is None else (tensor.layer,)  # the stacked-layer axis, when there is one
        want_lo = layer + (start,) + (0,) * (len(md.size) - lead - 1)
        want_hi = tuple(n + 1 for n in layer) + (stop,) + tuple(md.size[lead + 1 :])
        out_shape = (stop - start, *md.size[lead + 1 :])
        out = None
        covered = 0
        for c in md.chunks:
            lo = [max(a, o) for a, o in zip(want_lo, c.offsets)]
            hi = [min(b, o + s) for b, o, s in zip(want_hi, c.offsets, c.sizes)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            src = self._load_chunk(tensor.key, c)
            if lo == list(want_lo) and hi == list(want_hi):  # one stored chunk holds the whole range: no copy
                return _narrow(
                    src, [low - o for low, o in zip(lo, c.offsets)], [h - low for low, h in zip(lo, hi)], out_shape
                )
            out = torch.empty(out_shape, dtype=md.properties.dtype) if out is None else out
            dst = out
            for dim, (low, h) in enumerate(zip(lo, hi)):
                src = src.narrow(dim, low - c.offsets[dim], h - low)
                if dim >= lead:
                    dst = dst.narrow(dim - lead, low - want_lo[dim], h - low)
            dst.copy_(src.reshape(dst.shape))
            covered += _numel([h - low for low, h in zip(lo, hi)])
        if out is None or covered != out.numel():
            raise ConvertError(f"{self.path}: stored chunks of {tensor.label} do not cover rows {start}:{stop}")
        return out


def _narrow(src: torch.Tensor, starts: Sequence[int], lengths: Sequence[int], shape) -> torch.Tensor:
    """A view of ``src`` [starts, starts + lengths) in every dim, reshaped to ``shape`` (the layer axis dropped)."""
    for dim, (start, length) in enumerate(zip(starts, lengths)):
        src = src.narrow(dim, start, length)
    return src.reshape(shape)


def _lead(tensor: McoreTensor) -> int:
    """Number of prepended (layer) axes of a stored key: 1 for stacked layers, 0 otherwise."""
    return 0 if tensor.layer is None else 1


def detect_prefix(state_dict_metadata, path: Path) -> str:
    """The prefix in front of the model's keys (``""``, ``"module."``, ...), found from its final norm."""
    found = [m.group(1) for m in map(_PREFIX_RE.match, state_dict_metadata) if m]
    if len(found) != 1:
        raise ConvertError(
            f"{path} holds {len(found)} model final-norm tensors (decoder.final_layernorm.weight): "
            f"not a checkpoint of one GPTModel"
        )
    return found[0]


_VOCAB_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")


def check_model_tensors(reader, plan, path: Path) -> None:
    """One-line ConvertError unless ``reader`` (any reader of stored global tensors) holds every tensor of
    ``plan`` in its shape; the vocabulary may carry any padding, as long as the real vocabulary is there."""
    for key, shape in plan.global_shapes().items():
        md = reader.tensor_meta(key)
        if md is None:
            raise ConvertError(
                f"{path} lacks the tensor {key}: it does not hold the {plan.cfg.family} model its metadata describes"
            )
        stored = tuple(md.size)
        if key in _VOCAB_KEYS:
            ok = stored[1:] == shape[1:] and stored[0] >= plan.cfg.vocab_size
        else:
            ok = stored == shape
        if not ok:
            raise ConvertError(f"{path}: {key} has shape {stored}, the checkpoint's model config says {shape}")
