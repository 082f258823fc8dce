"""HF / Megatron-Core <-> NeMo (convert.nemo): model_config.yaml against hand-written expectations, NeMo's key
names, bit-identical round trips under TP=2 x PP=1 and TP=1 x PP=2, .nemo tar input, logits through the NeMo
weights (one subprocess), and one-line errors.

NeMo itself is not installed here: tests/aligner checks the same export with NeMo's own code in the aligner venv.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from torch.distributed.checkpoint import FileSystemReader

from megatron_octo.cli import main
from megatron_octo.convert import mcore_to_hf
from megatron_octo.convert import nemo_to_hf, nemo_to_mcore, to_nemo
from megatron_octo.models import family_for_hf_config

from .conftest import MODELS, load_safetensors_dir
from .test_convert import assert_nothing_written, assert_one_line_error
from .test_parallel import run, verify_lines

LAYOUTS = [(2, 1), (1, 2)]


@pytest.fixture(scope="module")
def nemo_exports(hf_models, tmp_path_factory):
    """(model, tp, pp) -> the NeMo export of each HF model under each layout."""
    root = tmp_path_factory.mktemp("nemo")
    return {(name, tp, pp): to_nemo("hf", path, root / f"{name}-tp{tp}-pp{pp}", tp=tp, pp=pp, quiet=True).output
            for name, path in hf_models.items() for tp, pp in LAYOUTS}


def stored(ckpt: Path) -> dict:
    md = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    return {k: tuple(v.size) for k, v in md.items() if hasattr(v, "size")}


def test_model_config_of_the_tied_tiny_llama(nemo_exports):
    out = nemo_exports[("llama-tied", 2, 1)]
    conf = yaml.safe_load((out / "model_config.yaml").read_text())
    # tiny-llama: 4 layers, width 64, MLP 128, 4 heads in 2 KV groups of head_dim 16, 256 tokens, tied, llama3
    # scaling factor 4 over 64 original positions, theta 5e5; fp32 weights; TP=2 pads 256 to a multiple of 256.
    expected = {
        "mcore_gpt": True, "transformer_engine": True, "precision": 32, "tensor_model_parallel_size": 2,
        "pipeline_model_parallel_size": 1, "num_layers": 4, "hidden_size": 64, "ffn_hidden_size": 128,
        "num_attention_heads": 4, "num_query_groups": 2, "kv_channels": 16, "encoder_seq_length": 256,
        "max_position_embeddings": 256, "normalization": "rmsnorm", "layernorm_epsilon": 1e-5,
        "activation": "fast-swiglu", "bias": False, "qkv_bias": False, "position_embedding_type": "rope",
        "rotary_percentage": 1.0, "rotary_base": 500000.0, "seq_len_interpolation_factor": None,
        "scale_positional_embedding": True, "scale_factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "old_context_len": 64, "share_embeddings_and_output_weights": True, "make_vocab_size_divisible_by": 128,
        "override_vocab_size": 256, "hidden_dropout": 0.0, "attention_dropout": 0.0, "persist_layer_norm": False,
        "target": "nemo.collections.nlp.models.language_modeling.megatron_gpt_model.MegatronGPTModel",
    }
    assert {k: conf[k] for k in expected} == expected
    assert conf["tokenizer"]["library"] == "huggingface" and conf["tokenizer"]["use_fast"] is True
    assert conf["tokenizer"]["type"] == str(out / "tokenizer")
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert "optim" in conf  # MegatronGPTModel reads cfg.optim unguarded
    # read unguarded by NeMo-Aligner's training path: the trainer builder, MegatronGPTModel.setup (model.data) and
    # the actor's switch to inference (activation checkpointing; none here)
    assert conf["gradient_as_bucket_view"] is True and conf["data"]["data_prefix"] is None
    assert all(conf[f"activations_checkpoint_{k}"] is None for k in ("granularity", "method", "num_layers"))
    # transformers 5 saves the class as TokenizersBackend, which NeMo's transformers 4.x cannot resolve
    tok_config = json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_model_config_of_qwen2_with_biases_and_padding(nemo_exports):
    conf = yaml.safe_load((nemo_exports[("qwen2-untied-v300", 1, 2)] / "model_config.yaml").read_text())
    # 300 tokens at TP=1: the next multiple of 128 is 384; QKV biases; untied; no rope scaling.
    assert conf["override_vocab_size"] == 384
    assert (conf["qkv_bias"], conf["bias"], conf["share_embeddings_and_output_weights"]) == (True, False, False)
    assert conf["scale_positional_embedding"] is False and "scale_factor" not in conf
    assert (conf["tensor_model_parallel_size"], conf["pipeline_model_parallel_size"]) == (1, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_are_megatron_keys_under_model_prefix(name, nemo_exports, converted):
    """The same global tensors as our own TP=2 checkpoint, each key with NeMo's ``model.`` in front."""
    ours = stored(converted[name])
    theirs = stored(nemo_exports[(name, 2, 1)] / "model_weights")
    assert theirs == {"model." + k: v for k, v in ours.items()}


@pytest.mark.parametrize("tp, pp", LAYOUTS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_to_hf_is_bit_identical(name, tp, pp, hf_models, nemo_exports, tmp_path):
    back = nemo_to_hf(nemo_exports[(name, tp, pp)], tmp_path / "hf", quiet=True).output
    original, returned = load_safetensors_dir(hf_models[name]), load_safetensors_dir(back)
    assert sorted(original) == sorted(returned)
    assert all(original[k].dtype == returned[k].dtype and original[k].equal(returned[k]) for k in original)
    configs = [json.loads((p / "config.json").read_text()) for p in (hf_models[name], back)]
    assert [family_for_hf_config(c).from_hf(c) for c in configs] == [family_for_hf_config(configs[0]).from_hf(
        configs[0])] * 2
    assert (back / "tokenizer.json").is_file()


def test_nemo_tar_file_and_mcore_paths(hf_models, nemo_exports, tmp_path):
    """A packed .nemo reads like its directory; nemo -> mcore (TP=1) -> hf and mcore -> nemo keep every tensor."""
    name = "qwen2-untied-v300"
    packed = tmp_path / "model.nemo"
    with tarfile.open(packed, "w:") as tar:
        tar.add(nemo_exports[(name, 2, 1)], arcname=".")
    mcore = nemo_to_mcore(packed, tmp_path / "mcore", quiet=True).output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nemo-extract-")]
    renemo = to_nemo("mcore", mcore, tmp_path / "renemo", tp=1, pp=2, quiet=True).output
    back = nemo_to_hf(renemo, tmp_path / "hf", quiet=True).output
    original, returned = load_safetensors_dir(hf_models[name]), load_safetensors_dir(back)
    assert sorted(original) == sorted(returned) and all(original[k].equal(returned[k]) for k in original)
    assert mcore_to_hf(mcore, tmp_path / "hf2", quiet=True).output.is_dir()
    assert (tmp_path / "hf2" / "tokenizer.json").is_file()


def _cut_in_half(packed: Path) -> None:
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) // 2])


def _cut_between_members(packed: Path) -> None:
    """Keep the members that fit in the first half whole and drop the rest with the end-of-archive blocks: a tar
    that tarfile reads without complaint."""
    with tarfile.open(packed) as tar:
        ends = [m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for m in tar.getmembers()]
    size = packed.stat().st_size
    keep = max(e for e in ends if e <= size // 2)
    packed.write_bytes(packed.read_bytes()[:keep])


@pytest.mark.parametrize("cut", [_cut_in_half, _cut_between_members])
def test_a_truncated_nemo_tar_is_one_line(cut, nemo_exports, tmp_path, capsys):
    packed = tmp_path / "model.nemo"
    with tarfile.open(packed, "w:") as tar:
        tar.add(nemo_exports[("llama-tied", 2, 1)], arcname=".")
    cut(packed)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["convert", "--from", "nemo", "--to", "hf", "--input", str(packed), "--output", str(out)]) == 2
    assert_one_line_error(capsys, f"--input {packed} is a truncated or corrupt .nemo tar (")
    assert_nothing_written(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nemo-extract-")]


def edit_yaml(path: Path, **changes) -> None:
    conf = yaml.safe_load((path / "model_config.yaml").read_text())
    conf.update(changes)
    (path / "model_config.yaml").write_text(yaml.safe_dump(conf))


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("change, fragment", [
    ({"normalization": "layernorm"}, "normalization='layernorm' is not supported"),
    ({"activation": "gelu"}, "activation='gelu' is not supported"),
    ({"seq_len_interpolation_factor": 2.0}, "seq_len_interpolation_factor=2.0 is not supported"),
    ({"num_layers": 2}, "has shape (4, 64), the checkpoint's model config says (2, 64)"),
])
def test_unsupported_nemo_configs_are_refused(change, fragment, nemo_exports, tmp_path, capsys):
    src = copy_tree(nemo_exports[("llama-untied", 2, 1)], tmp_path / "in")
    edit_yaml(src, **change)
    out = tmp_path / "out"
    assert main(["convert", "--from", "nemo", "--to", "hf", "--input", str(src), "--output", str(out)]) == 2
    assert_one_line_error(capsys, fragment)
    assert_nothing_written(out)


@pytest.mark.parametrize("argv, fragment", [
    (["--from", "nemo", "--to", "hf", "--input", "{hf}"], "not a NeMo checkpoint"),
    (["--from", "nemo", "--to", "hf", "--input", "{file}"], "neither a NeMo checkpoint directory nor a .nemo"),
    (["--from", "hf", "--to", "nemo", "--input", "{hf}", "--tp", "3"], "--tp 3 must divide"),
    (["--from", "hf", "--to", "nemo", "--input", "{hf}", "--output", "{existing}"], "already exists"),
])
def test_bad_requests(argv, fragment, hf_models, tmp_path, capsys):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep").write_text("x")
    (tmp_path / "file").write_text("not a tar")
    fill = {"hf": str(hf_models["llama-tied"]), "file": str(tmp_path / "file"), "existing": str(tmp_path / "existing")}
    argv = [a.format(**fill) for a in argv]
    out = tmp_path / "out"
    assert main(["convert", *argv, *([] if "--output" in argv else ["--output", str(out)])]) == 2
    assert_one_line_error(capsys, fragment)
    assert_nothing_written(out)
    assert (tmp_path / "existing" / "keep").read_text() == "x"


@pytest.fixture(scope="module")
def verified(hf_models, nemo_exports, tmp_path_factory):
    """One subprocess: hf -> nemo and nemo -> hf with --verify at 1e-5, and a broken QKV map (must fail)."""
    root = tmp_path_factory.mktemp("nemo-cli")
    convert = ["convert", "--quiet", "--verify", "--atol", "1e-5"]
    steps = [
        {"octo": convert + ["--from", "hf", "--to", "nemo", "--input", str(hf_models["llama-tied"]), "--output",
                            str(root / "good"), "--tp", "2"]},
        {"octo": convert + ["--from", "nemo", "--to", "hf", "--input", str(nemo_exports[("qwen2-untied-v300", 1, 2)]),
                            "--output", str(root / "back")]},
        {"octo": convert + ["--from", "hf", "--to", "nemo", "--input", str(hf_models["llama-untied"]), "--output",
                            str(root / "bad")], "swap_kv": True},
    ]
    (root / "steps.json").write_text(json.dumps(steps))
    proc = run([sys.executable, "-m", "tests.convert.cli_checks", str(root / "steps.json")])
    codes = json.loads(re.search(r"^CODES (.*)$", proc.stdout, re.M).group(1))
    return root, codes, proc.stdout, proc.stderr


def test_logits_through_the_nemo_weights_match_transformers(verified):
    root, codes, stdout, stderr = verified
    assert codes == [0, 0, 1], stderr[-2000:]
    lines = verify_lines(stdout)
    assert [(a, b, ok) for a, b, _, _, ok in lines] == [("hf", "nemo", "OK"), ("nemo", "hf", "OK")]
    assert all(diff <= 1e-5 and kl <= 1e-9 for _, _, diff, kl, _ in lines), lines
    bad = next(l for l in stderr.splitlines() if l.startswith("octo: error: verify (hf vs nemo"))
    assert float(re.search(r"max \|logit diff\| = (\S+)", bad).group(1)) > 1e-2
    assert (root / "good" / "model_weights").is_dir() and not (root / "bad").exists()
