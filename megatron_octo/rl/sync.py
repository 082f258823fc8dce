"""Weight sync: the trainer's Megatron-Core shards -> the rollout engines' Hugging Face tensors, in memory, streamed.

``WeightSync`` (what ``octo rl`` uses) moves one Megatron-Core tensor at a time:

1. Every rank lists its pieces of the model from ``GPTModel.sharded_state_dict()`` (global key, global offsets,
   a view of the local data). Only this metadata is exchanged (once; the layout does not change) and every rank
   derives the same *plan*: the model's tensors in the weight map's order (embedding, then layer by layer), each
   with the ranks holding its distinct pieces (replicated pieces are taken once).
2. For each tensor in plan order the rollout leader (model-parallel rank 0) allocates the full tensor in the
   engine's dtype and receives the other ranks' pieces by point-to-point sends over the model-parallel group (the
   TP and PP gather, shard by shard); pieces are cast to the engine's dtype by their owner before they travel.
3. The leader maps the full tensor to HF names with the family's weight map (``models.weight_map.tensor_to_hf``, the
   rules ``octo convert`` uses) and streams the HF tensors into its engine (``engine.load_weights`` takes an
   iterator); where further ranks host parts of the engine (vLLM tensor parallelism inside the trainer's TP group)
   the leader packs them into buckets and broadcasts each bucket over the engine group (``rl.transfer``).

So no rank holds more than one bucket plus one layer's full tensors at a time (tests/rl/test_sync.py asserts it
with ``utils.memprobe``), and nothing is pickled or written to disk. The values equal those of the host-gather path
below bit for bit, in the engine's dtype (casting is elementwise, so where it happens does not change the result).

``gather_hf_state`` is the previous path (every shard copied to the host in fp32, gathered with ``gather_object``,
the full model assembled on the leader); ``benchmarks/rollout.py`` measures the new path against it and tests use
it as a reference.

With the distributed optimizer and ``overlap_param_gather``, parameters after ``optimizer.step()`` are current only
in each rank's own shard until the next forward; both paths read the model through ``training.params.model_state``,
which completes that all-gather first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import get_family
from megatron_octo.models.weight_map import mcore_order, tensor_to_hf
from megatron_octo.training.init import _shard_pieces
from megatron_octo.training.params import model_state

Piece = Tuple[str, Tuple[int, ...], Tuple[int, ...], torch.Tensor]
"""(per-layer Megatron-Core key, global offset, global shape, local data) of one shard."""


def _layer_key(key: str, layer: int) -> str:
    """Stacked checkpoint key + layer number -> the per-layer module name (``decoder.layers.{i}.<rest>``)."""
    prefix = "decoder.layers."
    assert key.startswith(prefix), f"stacked key {key} is not a decoder layer"
    return f"{prefix}{layer}.{key[len(prefix) :]}"


def shard_views(chunks) -> List[Piece]:
    """This rank's shards of every model tensor, keyed per layer; the data are views of the current parameters
    (collective over the data-parallel group when the parameter all-gather is deferred: ``training.params``)."""
    pieces: List[Piece] = []
    for sharded in model_state(chunks).values():
        shards, _ = _shard_pieces(sharded)
        for sh in shards:
            prepend = sh.prepend_axis_num
            key = _layer_key(sh.key, sh.global_offset[0]) if prepend else sh.key
            pieces.append((key, tuple(sh.global_offset[prepend:]), tuple(sh.global_shape[prepend:]), sh.data.detach()))
    return pieces


# ----------------------------------------------------------------------------------------------------------------
# The previous path: a host gather of the whole model (kept as the benchmark's baseline and the tests' reference)
# ----------------------------------------------------------------------------------------------------------------


def local_pieces(chunks) -> List[Piece]:
    """This rank's shards of every model tensor (host copies in fp32), keyed per layer."""
    return [(k, o, s, d.to("cpu", torch.float32, copy=True)) for k, o, s, d in shard_views(chunks)]


def assemble(pieces: List[Piece]) -> Dict[str, torch.Tensor]:
    """Full tensors from shards (replicated shards simply overwrite each other with equal values)."""
    full: Dict[str, torch.Tensor] = {}
    for key, offset, shape, data in pieces:
        target = full.setdefault(key, torch.zeros(shape, dtype=data.dtype))
        assert target.shape == torch.Size(shape), f"{key}: shards disagree on the global shape"
        index = tuple(slice(o, o + n) for o, n in zip(offset, data.shape))
        target[index] = data
    return full


def gather_hf_state(chunks, cfg: ModelConfig, mp_group) -> Dict[str, torch.Tensor]:
    """Collective over ``mp_group``: on its first rank, the full model as an HF state dict; elsewhere ``{}``.
    The whole model passes through host memory (fp32) and ``gather_object``: the baseline ``WeightSync`` replaces."""
    pieces = local_pieces(chunks)
    size = dist.get_world_size(mp_group)
    if size > 1:
        leader = dist.get_global_rank(mp_group, 0)
        if dist.get_rank(mp_group) != 0:
            dist.gather_object(pieces, None, dst=leader, group=mp_group)
            return {}
        gathered: List[Any] = [None] * size
        dist.gather_object(pieces, gathered, dst=leader, group=mp_group)
        pieces = [p for part in gathered for p in part]
    return get_family(cfg.family).state_dict_to_hf(assemble(pieces), cfg)


# ----------------------------------------------------------------------------------------------------------------
# The streamed path
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTensor:
    """One full Megatron-Core tensor of the model and where its distinct pieces live."""

    key: str
    shape: Tuple[int, ...]
    pieces: Tuple[Tuple[int, Tuple[int, ...], Tuple[int, ...]], ...]
    """(model-parallel group rank, global offset, local shape) of each distinct piece."""


@dataclass
class SyncStats:
    """What one sync moved."""

    tensors: int = 0
    """HF tensors delivered to the engine."""
    bytes: int = 0
    """Bytes of those tensors (engine dtype)."""
    seconds: float = 0.0
    buckets: int = 0
    """Buckets broadcast to engine peers (0 where the leader hosts the whole engine)."""
    extra: Dict[str, float] = field(default_factory=dict)


def _slices(offset, shape) -> Tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(offset, shape))


def build_plan(metadata: List[List[Tuple[str, tuple, tuple, tuple]]], cfg: ModelConfig) -> List[PlannedTensor]:
    """The model's tensors in the weight map's order from every rank's (key, offset, global shape, local shape)
    list; the tied output layer (a last stage's copy of the embedding) is left out, replicated pieces kept once."""
    by_key: Dict[str, Dict[tuple, tuple]] = {}
    shapes: Dict[str, tuple] = {}
    for rank, entries in enumerate(metadata):
        for key, offset, global_shape, local_shape in entries:
            if key.endswith("_extra_state"):
                continue
            if shapes.setdefault(key, global_shape) != global_shape:
                raise RuntimeError(f"weight sync: ranks disagree on the global shape of {key}")
            by_key.setdefault(key, {}).setdefault(offset, (rank, offset, local_shape))
    order = mcore_order(cfg, get_family(cfg.family).layer_rules, keys=by_key)
    return [PlannedTensor(key, shapes[key], tuple(by_key[key].values())) for key in order]


Bucket = List[Tuple[int, List[Tuple[str, Tuple[int, ...], int]]]]
"""Plan entries (index, [(HF name, shape, element offset in the bucket buffer)]) broadcast together."""


def plan_buckets(hf_layout: List[List[Tuple[str, Tuple[int, ...]]]], itemsize: int, max_bytes: int) -> List[Bucket]:
    """Consecutive plan entries grouped so that their HF tensors take at most ``max_bytes`` (an entry larger than
    that forms a bucket of its own); each HF tensor gets its element offset in the bucket's flat buffer."""
    buckets: List[Bucket] = []
    current: Bucket = []
    used = 0
    for index, outputs in enumerate(hf_layout):
        numel = sum(_numel(shape) for _, shape in outputs)
        if current and (used + numel) * itemsize > max_bytes:
            buckets.append(current)
            current, used = [], 0
        placed = []
        for name, shape in outputs:
            placed.append((name, shape, used))
            used += _numel(shape)
        current.append((index, placed))
    if current:
        buckets.append(current)
    return buckets


def bucket_numel(bucket: Bucket) -> int:
    name, shape, offset = bucket[-1][1][-1]
    return offset + _numel(shape)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class WeightSync:
    """Streams the trainer's weights into the rollout engine(s) of one model-parallel group; reusable every step.

    ``dtype`` is the engine's dtype. ``engine_group`` is a process group of this model-parallel group's ranks that
    host a part of an engine (vLLM tensor parallelism inside the trainer's TP group; its first rank is the
    leader), given on its members; they receive every HF tensor in flat buckets of at most ``bucket_bytes`` (or
    one Megatron-Core tensor's worth, where that is larger) broadcast by the leader. Without it (or on a group of
    one) the leader streams tensors into its engine one at a time and the engine batches as its transport needs.
    """

    def __init__(
        self, cfg: ModelConfig, mp_group, dtype: torch.dtype, *, engine_group=None, bucket_bytes: int = 256 << 20
    ):
        self.cfg, self.mp_group, self.dtype = cfg, mp_group, dtype
        self.bucket_bytes = bucket_bytes
        self.rank = dist.get_rank(mp_group)
        self.engine_group = engine_group if engine_group is not None and dist.get_world_size(engine_group) > 1 else None
        self._plan: Optional[List[PlannedTensor]] = None
        self._buckets: List[Bucket] = []
        self.rules = get_family(cfg.family).layer_rules

    def _setup(self, views: List[Piece]) -> None:
        """The plan and its buckets (once: a metadata all-gather over the model-parallel group)."""
        if self._plan is not None:
            return
        mine = [(k, o, s, tuple(d.shape)) for k, o, s, d in views]
        metadata: List[Any] = [None] * dist.get_world_size(self.mp_group)
        dist.all_gather_object(metadata, mine, group=self.mp_group)
        self._plan = build_plan(metadata, self.cfg)
        layout = [
            [
                (name, tuple(t.shape))
                for name, t in tensor_to_hf(e.key, torch.empty(e.shape, device="meta"), self.cfg, self.rules)
            ]
            for e in self._plan
        ]
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        self._buckets = plan_buckets(layout, itemsize, self.bucket_bytes)

    @property
    def largest_bucket_bytes(self) -> int:
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return max((bucket_numel(b) for b in self._buckets), default=0) * itemsize

    def stream(self, chunks) -> Iterator[Tuple[str, torch.Tensor]]:
        """Collective over the model-parallel group (every rank must exhaust it): each HF tensor of the model in
        the engine's dtype, on the leader and the engine group's members; nothing on other ranks (they send)."""
        views = shard_views(chunks)
        self._setup(views)
        plan = self._plan
        assert plan is not None  # _setup built it
        local = {(k, o): d for k, o, _, d in views}
        device = views[0][3].device if views else torch.device("cpu")
        leader = dist.get_global_rank(self.mp_group, 0)
        member = self.engine_group is not None
        for bucket in self._buckets:
            buffer = None
            if member:
                buffer = torch.empty(bucket_numel(bucket), dtype=self.dtype, device=device)
            for index, placed in bucket:
                entry = plan[index]
                full = self._gather(entry, local, leader, device)
                if full is None:
                    continue
                for (name, tensor), (_, shape, offset) in zip(
                    tensor_to_hf(entry.key, full, self.cfg, self.rules), placed
                ):
                    if buffer is None:
                        yield name, tensor
                    else:
                        buffer[offset : offset + tensor.numel()].view(shape).copy_(tensor)
                del full, tensor
            if buffer is not None:
                dist.broadcast(buffer, src=leader, group=self.engine_group)
                for _, placed in bucket:
                    for name, shape, offset in placed:
                        yield name, buffer[offset : offset + _numel(shape)].view(shape)
                del buffer

    def _gather(self, entry: PlannedTensor, local, leader: int, device) -> Optional[torch.Tensor]:
        """The full tensor ``entry`` on the leader (None elsewhere); other ranks send their pieces to it."""
        full = torch.empty(entry.shape, dtype=self.dtype, device=device) if self.rank == 0 else None
        for owner, offset, shape in entry.pieces:
            if owner == self.rank:
                data = local[(entry.key, offset)]
                if full is not None:
                    full[_slices(offset, shape)].copy_(data)
                else:
                    dist.send(data.to(self.dtype).contiguous(), dst=leader, group=self.mp_group)
            elif full is not None:
                target = full[_slices(offset, shape)]
                source = dist.get_global_rank(self.mp_group, owner)
                if target.is_contiguous():
                    dist.recv(target, src=source, group=self.mp_group)
                else:
                    buffer = torch.empty(shape, dtype=self.dtype, device=device)
                    dist.recv(buffer, src=source, group=self.mp_group)
                    target.copy_(buffer)
                    del buffer
        return full

    @torch.no_grad()
    def __call__(self, chunks, engine) -> SyncStats:
        """Collective over the model-parallel group: the engine(s) of this group get the trainer's weights.
        ``engine`` is None on ranks that host no engine part (they only send their shards)."""
        start = time.perf_counter()
        stats = SyncStats()
        stream = _counting(self.stream(chunks), stats)
        if engine is not None:
            engine.load_weights(stream)
        for _ in stream:  # ranks without an engine still serve the leader
            pass
        stats.buckets = len(self._buckets) if self.engine_group is not None else 0
        stats.seconds = time.perf_counter() - start
        return stats


def _counting(stream, stats: SyncStats) -> Iterator[Tuple[str, torch.Tensor]]:
    for name, tensor in stream:
        stats.tensors += 1
        stats.bytes += tensor.numel() * tensor.element_size()
        yield name, tensor
