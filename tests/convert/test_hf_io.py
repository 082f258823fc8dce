"""Streaming safetensors writes read back by the safetensors library; shard planning; lazy reads; config merge."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from megatron_octo.convert import hf_io
from megatron_octo.convert.options import parse_size as _parse_size
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.hf_io import OutTensor, SafetensorsWriter


def test_streamed_file_reads_back_with_safetensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(7, 3, generator=gen).to(torch.bfloat16), "b": torch.randn(5, generator=gen),
               "c": torch.randn(4, 2, generator=gen).to(torch.float16)}
    path = tmp_path / "x.safetensors"
    writer = SafetensorsWriter(path, [OutTensor(k, tuple(v.shape), v.dtype) for k, v in tensors.items()])
    for name, t in tensors.items():
        for start in range(0, t.shape[0], 3):  # row blocks of 3
            writer.write(name, t[start: start + 3])
    writer.close()
    back = load_file(str(path))
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    # The header is padded so the data starts 8-byte aligned: 8 + header length is a multiple of 8.
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0


def test_writer_refuses_out_of_order_and_short_writes(tmp_path):
    spec = [OutTensor("a", (2, 2), torch.float32), OutTensor("b", (2,), torch.float32)]
    w = SafetensorsWriter(tmp_path / "y.safetensors", spec)
    with pytest.raises(RuntimeError, match="expected a"):
        w.write("b", torch.zeros(2))
    w.write("a", torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="a is missing 8 bytes"):
        w.close()
    w.abort()
    w = SafetensorsWriter(tmp_path / "z.safetensors", spec)
    with pytest.raises(RuntimeError, match="more than"):
        w.write("a", torch.zeros(3, 2))
    w.abort()


def test_plan_shards_names_and_index(tmp_path):
    ts = [OutTensor(f"t{i}", (10,), torch.float32) for i in range(5)]  # 40 bytes each
    assert [(f, [t.name for t in g]) for f, g in hf_io.plan_shards(ts, 1000)] == [
        ("model.safetensors", ["t0", "t1", "t2", "t3", "t4"])]
    shards = hf_io.plan_shards(ts, 100)  # 2 tensors a shard
    assert [f for f, _ in shards] == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                      "model-00003-of-00003.safetensors"]
    assert [len(g) for _, g in shards] == [2, 2, 1]
    assert [len(g) for _, g in hf_io.plan_shards(ts, 10)] == [1] * 5  # a tensor over the limit gets its own shard
    hf_io.write_index(tmp_path, shards)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 200
    assert index["weight_map"]["t4"] == "model-00003-of-00003.safetensors"


def test_lazy_reads_and_header_checks(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    t = torch.arange(24.0).reshape(6, 4)
    save_file({"w": t, "n": torch.ones(3, dtype=torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    ckpt = hf_io.HFCheckpoint(tmp_path)
    assert ckpt.tensors["w"].shape == (6, 4) and ckpt.tensors["n"].dtype == torch.bfloat16
    assert torch.equal(ckpt.read_rows("w", 2, 5), t[2:5])
    save_file({"i": torch.zeros(2, dtype=torch.int64)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConvertError, match="dtype I64; only F32, BF16 and F16"):
        hf_io.HFCheckpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ConvertError, match="is not a readable safetensors file"):
        hf_io.HFCheckpoint(tmp_path)


def test_merged_config_precedence():
    original = {"model_type": "llama", "eos_token_id": [7, 8], "dtype": "float32", "custom": 1,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1.0}, "transformers_version": "5.0"}
    derived = {"model_type": "llama", "eos_token_id": 3, "bos_token_id": 4, "torch_dtype": "bfloat16",
               "rope_theta": 2.0}
    out = hf_io.merged_config(original, derived, {"bos_token_id": 5, "pad_token_id": 6})
    # token ids: original, then tokenizer, then derived (a preset's)
    assert (out["eos_token_id"], out["bos_token_id"], out["pad_token_id"]) == ([7, 8], 5, 6)
    assert out["custom"] == 1 and out["torch_dtype"] == "bfloat16" and out["rope_theta"] == 2.0
    assert not {"dtype", "rope_parameters", "transformers_version"} & set(out)
    assert hf_io.merged_config(None, derived, {})["bos_token_id"] == 4


@pytest.mark.parametrize("text, size", [("5GB", 5 * 10**9), ("200KB", 200_000), ("1.5MB", 1_500_000), ("77", 77)])
def test_parse_size(text, size):
    assert _parse_size(text) == size


def test_parse_size_rejects_nonsense():
    with pytest.raises(ConvertError, match="not a size"):
        _parse_size("lots")
