"""Megatron-LM checkpoints in: fixtures written by Megatron-LM core_v0.16.1's own training code
(``tools/megatron_lm_fixtures.py``, committed under tests/convert/data/megatron_lm) convert to Hugging Face with
the logits Megatron-LM's own model gave (fp32, 1e-5).

- ``torch_dist``: TP=2, GQA (4 heads, 2 groups), untied, RMSNorm eps 1e-5, SwiGLU, RoPE base 500000.
- ``legacy``: the ``torch`` format at TP=2 x PP=2 (four rank files), tied, QKV biases, RMSNorm eps 1e-6, base 20000.

The arguments each was written with are in its command.json; the numbers below restate them by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from megatron_octo.cli import main
from megatron_octo.convert import mcore_to_hf, mcore_to_mcore

from .conftest import hf_logits
from .test_convert import assert_nothing_written, assert_one_line_error

DATA = Path(__file__).parent / "data" / "megatron_lm"
ATOL = 1e-5
# (family, tied, qkv bias, rope base, norm eps, layers, hidden, ffn, heads, groups, head dim, vocab)
EXPECTED = {
    "torch_dist": ("llama", False, False, 500000.0, 1e-5, 4, 32, 96, 4, 2, 8, 300),
    "legacy": ("qwen2", True, True, 20000.0, 1e-6, 4, 32, 96, 4, 2, 8, 300),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    return {name: mcore_to_hf(DATA / name / "save", root / name, quiet=True) for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_converts_to_hf_with_megatron_lms_logits(name, exported):
    ids, expected = torch.load(DATA / name / "tokens.pt"), torch.load(DATA / name / "logits.pt")
    got = hf_logits(exported[name].output, ids)
    assert got.shape == expected.shape == (2, 16, 300)
    assert expected.abs().max() > 1.0  # a real signal
    assert (got - expected).abs().max() <= ATOL


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_config_comes_from_the_args(name, exported):
    family, tied, bias, base, eps, layers, hidden, ffn, heads, groups, head_dim, vocab = EXPECTED[name]
    config = json.loads((exported[name].output / "config.json").read_text())
    assert config["model_type"] == family and config["tie_word_embeddings"] is tied
    assert config.get("attention_bias", bias) is bias or family == "qwen2"
    assert config["rope_theta"] == base and config["rms_norm_eps"] == eps
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (layers, hidden, ffn)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (heads, groups)
    assert config.get("head_dim", hidden // heads) == head_dim and config["vocab_size"] == vocab


@pytest.mark.parametrize("form", ["save", "iter", "step"])
def test_save_folder_iteration_folder_and_dir_step(form, exported, tmp_path):
    save = DATA / "torch_dist" / "save"
    spec = {"save": save, "iter": save / "iter_0000010", "step": f"{save}:10"}[form]
    out = mcore_to_hf(spec, tmp_path / "hf", quiet=True).output
    ids = torch.load(DATA / "torch_dist" / "tokens.pt")
    assert torch.equal(hf_logits(out, ids), hf_logits(exported["torch_dist"].output, ids))


def test_reshard_keeps_the_logits_and_records_the_source(tmp_path):
    """Legacy TP=2 x PP=2 -> our layout for TP=1 (a save folder with tracker ``release``) -> HF."""
    from megatron_octo.training.checkpoint import read_meta, resolve

    out = mcore_to_mcore(DATA / "legacy" / "save", tmp_path / "tp1", quiet=True).output
    assert (out / "latest_checkpointed_iteration.txt").read_text() == "release"
    meta = read_meta(resolve(str(out)))
    assert meta.lineage[-1]["recipe"] == "megatron-lm" and meta.lineage[-1]["step"] == 10
    hf = mcore_to_hf(out, tmp_path / "hf", quiet=True).output
    ids, expected = torch.load(DATA / "legacy" / "tokens.pt"), torch.load(DATA / "legacy" / "logits.pt")
    assert (hf_logits(hf, ids) - expected).abs().max() <= ATOL


def _edit_args(save: Path, **changes) -> None:
    """Rewrite the args a torch_dist checkpoint's common.pt records."""
    path = save / "iter_0000010" / "common.pt"
    state = torch.load(path, weights_only=False)
    for key, value in changes.items():
        setattr(state["args"], key, value)
    torch.save(state, path)


@pytest.mark.parametrize("change, fragment", [
    ({"normalization": "LayerNorm"}, "Megatron-LM arg normalization='LayerNorm': only RMSNorm models convert"),
    ({"swiglu": False}, "Megatron-LM arg swiglu=False: only SwiGLU MLPs convert"),
    ({"add_bias_linear": True}, "Megatron-LM arg add_bias_linear=True"),
    ({"qk_layernorm": True}, "Megatron-LM arg qk_layernorm=True: QK norm is not supported"),
    ({"num_experts": 8}, "Megatron-LM arg num_experts=8: MoE models are not supported"),
    ({"mtp_num_layers": 1}, "Megatron-LM arg mtp_num_layers=1"),
    ({"rotary_percent": 0.5}, "Megatron-LM arg rotary_percent=0.5: partial RoPE"),
    ({"rotary_interleaved": True}, "Megatron-LM arg rotary_interleaved=True"),
    ({"apply_layernorm_1p": True}, "Megatron-LM arg apply_layernorm_1p=True"),
    ({"position_embedding_type": "learned_absolute"}, "position_embedding_type='learned_absolute'"),
    ({"ffn_hidden_size": 64}, "decoder.layers.mlp.linear_fc1.weight has shape (4, 192, 32)"),
])
def test_what_our_families_cannot_represent_is_refused(change, fragment, tmp_path, capsys):
    save = tmp_path / "save"
    shutil.copytree(DATA / "torch_dist" / "save", save)
    _edit_args(save, **change)
    out = tmp_path / "out"
    assert main(["convert", "--from", "mcore", "--to", "hf", "--input", str(save), "--output", str(out)]) == 2
    assert_one_line_error(capsys, fragment)
    assert_nothing_written(out)


def test_tracker_naming_a_missing_iteration_is_one_line(tmp_path, capsys):
    save = tmp_path / "save"
    shutil.copytree(DATA / "torch_dist" / "save", save)
    (save / "latest_checkpointed_iteration.txt").write_text("20")
    out = tmp_path / "out"
    assert main(["convert", "--from", "mcore", "--to", "hf", "--input", str(save), "--output", str(out)]) == 2
    assert_one_line_error(capsys, "names '20' but")


def test_incomplete_legacy_checkpoint_is_one_line(tmp_path, capsys):
    save = tmp_path / "save"
    shutil.copytree(DATA / "legacy" / "save", save)
    shutil.rmtree(save / "iter_0000010" / "mp_rank_01_001")
    out = tmp_path / "out"
    assert main(["convert", "--from", "mcore", "--to", "hf", "--input", str(save), "--output", str(out)]) == 2
    assert_one_line_error(capsys, "the args say TP=2 x PP=2 but the rank directories are")
