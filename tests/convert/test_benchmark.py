"""The pieces of benchmarks/convert_memory.py on a tiny shape (the benchmark itself is slow and not a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from megatron_octo.convert import hf_io
from megatron_octo.convert.sources import open_hf

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "convert_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("convert_memory", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_checkpoint_has_the_preset_shape(bench, tmp_path):
    nbytes = bench.write_synthetic_hf(tmp_path / "hf", "tiny-llama", "bf16", max_shard=200_000)
    # tiny-llama: embedding 256 x 64, final norm 64; a layer: q 64x64, k and v 32x64, o 64x64, gate and up 128x64,
    # down 64x128 (36,864), two norms of 64 (128); 4 layers; tied (no lm_head). bf16: 2 bytes a parameter.
    assert nbytes == 2 * (256 * 64 + 64 + 4 * (36_864 + 128)) == 328_832
    hf, cfg = open_hf(tmp_path / "hf", 128)  # every tensor present with the config's shape
    assert (cfg.num_layers, cfg.hidden_size, cfg.tie_word_embeddings) == (4, 64, True)
    assert {t.dtype for t in hf.tensors.values()} == {torch.bfloat16}
    assert (tmp_path / "hf" / hf_io.INDEX_FILE).is_file()  # 327 kB in shards of 200 kB
    w = hf.read_rows("model.layers.1.mlp.up_proj.weight", 0, 128).float()
    assert 0.015 < w.std() < 0.025  # normal(0, 0.02)


def test_measure_reports_the_child_peak(bench):
    result = bench.measure("", "x = bytearray(64 << 20)", "alloc")
    assert result["peak_bytes"] >= 64 << 20 and result["wall_s"] >= 0


def test_round_trip_check_detects_a_difference(bench, tmp_path):
    bench.write_synthetic_hf(tmp_path / "a", "tiny-llama", "fp32", seed=0)
    bench.write_synthetic_hf(tmp_path / "b", "tiny-llama", "fp32", seed=0)
    bench.write_synthetic_hf(tmp_path / "c", "tiny-llama", "fp32", seed=1)
    names = ["model.embed_tokens.weight", "model.layers.3.self_attn.v_proj.weight"]
    assert bench.check_round_trip(tmp_path / "a", tmp_path / "b", names)
    assert not bench.check_round_trip(tmp_path / "a", tmp_path / "c", names)


def test_table_ratios(bench):
    gib = 2**30
    results = {"convert": {"peak_bytes": gib, "wall_s": 2.0}, "baseline: x": {"peak_bytes": 4 * gib, "wall_s": 1.0}}
    rows = bench.table(results, weight_bytes=2 * gib).splitlines()
    assert rows[2] == "| convert | 1.00 GiB | 2.0 s | 1024 MiB/s | 25.0% |"
    assert rows[3] == "| baseline: x | 4.00 GiB | 1.0 s | 2048 MiB/s | 100.0% |"
