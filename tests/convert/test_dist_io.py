"""torch_dist writes piece by piece and region reads across stored chunks (no process group, no model)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import BytesStorageMetadata

from megatron_octo.convert.dist_io import DistCheckpoint, Piece, write_checkpoint
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import McoreTensor

LAYERS = 3
STACKED = [McoreTensor("decoder.layers.w", i, (10, 4)) for i in range(LAYERS)]
FLAT = McoreTensor("decoder.final_layernorm.weight", None, (6, 4))  # 2-D here: any shape will do
OBJECTS = [f"decoder.layers.w._extra_state/shard_{i}_{LAYERS}" for i in range(LAYERS)]


def full_value(t: McoreTensor) -> torch.Tensor:
    """A distinct value per element: 1000 * layer + 10 * row + column."""
    layer = 0 if t.layer is None else t.layer
    rows, cols = t.shape
    return 1000.0 * layer + 10.0 * torch.arange(rows).unsqueeze(1) + torch.arange(cols)


@pytest.fixture
def written(tmp_path):
    pieces = [Piece(t, a, min(a + 4, 10), torch.float32, LAYERS) for t in STACKED for a in range(0, 10, 4)]
    pieces += [Piece(FLAT, 0, 6, torch.bfloat16, LAYERS)]
    produced = []

    def produce(piece):
        produced.append((piece.tensor.label, piece.start))
        return full_value(piece.tensor)[piece.start: piece.stop].to(piece.dtype)

    write_checkpoint(tmp_path, pieces, OBJECTS, produce)
    return tmp_path, produced


def test_metadata_holds_global_shapes_chunks_and_objects(written):
    path, produced = written
    md = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    # Keys are GPTModel's own names, as training.checkpoint saves and loads them (no DDP `module.` prefix).
    assert md["decoder.layers.w"].size == torch.Size([3, 10, 4])
    chunks = sorted((tuple(c.offsets), tuple(c.sizes)) for c in md["decoder.layers.w"].chunks)
    assert chunks[:3] == [((0, 0, 0), (1, 4, 4)), ((0, 4, 0), (1, 4, 4)), ((0, 8, 0), (1, 2, 4))]
    assert md["decoder.final_layernorm.weight"].properties.dtype == torch.bfloat16
    assert all(isinstance(md[k], BytesStorageMetadata) for k in OBJECTS)
    assert len(produced) == 10  # every piece produced exactly once
    assert json.loads((path / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
    assert torch.load(path / "common.pt") == {}


def test_extra_state_objects_hold_a_list_with_none(written):
    path, _ = written
    reader = FileSystemReader(str(path))
    md = reader.read_metadata()
    info = next(v for k, v in md.storage_data.items() if k.fqn == OBJECTS[1])
    with open(path / info.relative_path, "rb") as f:
        f.seek(info.offset)
        assert torch.load(io.BytesIO(f.read(info.length)), weights_only=False) == [None]


def test_region_reads_across_chunks(written):
    path, _ = written
    ckpt = DistCheckpoint(path, cache_bytes=1)  # keeps only the last chunk: every chunk change reloads
    t = STACKED[2]
    assert torch.equal(ckpt.read(t, 3, 9), full_value(t)[3:9])  # spans three stored chunks
    assert torch.equal(ckpt.read(t, 0, 10), full_value(t))
    assert ckpt.row_boundaries(t) == [0, 4, 8]
    assert torch.equal(ckpt.read(FLAT, 1, 5), full_value(FLAT)[1:5].to(torch.bfloat16))
    assert ckpt.read(FLAT, 0, 6).dtype == torch.bfloat16


@pytest.mark.parametrize("prefix", ["", "module.module."])
def test_reads_any_module_prefix(tmp_path, prefix):
    write_checkpoint(tmp_path, [Piece(FLAT, 0, 6, torch.float32, LAYERS)], [],
                     lambda p: full_value(p.tensor), prefix=prefix)
    ckpt = DistCheckpoint(tmp_path)
    assert ckpt.prefix == prefix and torch.equal(ckpt.read(FLAT, 2, 4), full_value(FLAT)[2:4])


def test_a_checkpoint_without_a_model_is_refused(tmp_path):
    other = McoreTensor("optimizer.state.decoder.final_layernorm.weight", None, (6, 4))
    write_checkpoint(tmp_path, [Piece(other, 0, 6, torch.float32, LAYERS)], [], lambda p: torch.zeros(6, 4),
                     prefix="")
    with pytest.raises(ConvertError, match="holds 0 model final-norm tensors"):
        DistCheckpoint(tmp_path)


def test_wrong_piece_data_is_refused(tmp_path):
    piece = Piece(FLAT, 0, 6, torch.float32, LAYERS)
    with pytest.raises(RuntimeError, match="produced"):
        write_checkpoint(tmp_path, [piece], [], lambda p: torch.zeros(5, 4))
