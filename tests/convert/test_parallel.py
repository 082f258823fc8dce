"""Converted checkpoints in real Megatron-Core processes (gloo): logits under TP=2 x PP=2 against transformers,
Megatron-Core's own save of the loaded model against the converter's files, `octo train checkpoint.load=`, and the
`--verify` command lines (success, resharding, a training run directory, and a negative control).

Three subprocesses in all (the slow part of the converter's tests): one torchrun launch of 4 processes for the
logits and saves, one `octo train` process, one process for the command lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from megatron_octo.convert import mcore_to_hf

from .conftest import MODELS, hf_logits, load_safetensors_dir

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
ATOL = 1e-5  # fp32 logits of magnitude ~4 (see test_logits_match_transformers)


def run(cmd, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "ids.pt"
    torch.save(torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(7)), path)
    return path


@pytest.fixture(scope="module")
def tp2pp2(converted, tokens, tmp_path_factory):
    """name -> (logits under TP=2 x PP=2, Megatron-Core's own save of the loaded model)."""
    root = tmp_path_factory.mktemp("tp2pp2")
    jobs, out = [], {}
    for name, ckpt in converted.items():
        out[name] = (root / f"{name}.pt", root / f"{name}-megatron")
        jobs += ["--job", str(ckpt), str(tokens), str(out[name][0]), str(out[name][1])]
    run(TORCHRUN + ["-m", "tests.convert.torchrun_checks", "--tp", "2", "--pp", "2", *jobs])
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logits_match_transformers_under_tp2_pp2(name, hf_models, tokens, tp2pp2):
    expected = hf_logits(hf_models[name], torch.load(tokens))
    got = torch.load(tp2pp2[name][0])
    assert got.shape == expected.shape == (2, 24, MODELS[name][1]["vocab_size"])
    assert expected.abs().max() > 1.0  # random weights of unit effect: a real signal
    assert (got - expected).abs().max() <= ATOL


@pytest.mark.parametrize("name", sorted(MODELS))
def test_megatron_save_matches_the_converter_files(name, converted, tp2pp2):
    """What `octo train` saves of a GPTModel under TP=2 x PP=2 (local spec) has exactly the keys, global shapes,
    dtypes and extra-state objects the converter wrote (Megatron writes TP-sized chunks, the converter row blocks),
    plus, in the converter's, the final norm's extra state that the TE spec declares."""
    ours = FileSystemReader(str(converted[name])).read_metadata().state_dict_metadata
    theirs = FileSystemReader(str(tp2pp2[name][1])).read_metadata().state_dict_metadata
    assert set(ours) - set(theirs) == {"decoder.final_layernorm._extra_state/shard_0_1"}
    assert set(theirs) <= set(ours)
    for key, md in theirs.items():
        assert type(ours[key]) is type(md), key
        if hasattr(md, "size"):
            assert (ours[key].size, ours[key].properties.dtype) == (md.size, md.properties.dtype), key
    assert (converted[name] / "metadata.json").read_bytes() == (tp2pp2[name][1] / "metadata.json").read_bytes()
    # common.pt: Megatron-LM's non-tensor state of a release (tests/convert/test_megatron_lm.py checks its content)
    assert set(torch.load(converted[name] / "common.pt", weights_only=False)) == {
        "args", "checkpoint_version", "iteration", "num_floating_point_operations_so_far"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_megatron_save_converts_back_bit_identical(name, hf_models, tp2pp2, tmp_path):
    back = mcore_to_hf(tp2pp2[name][1], tmp_path / "hf", quiet=True).output
    original, again = load_safetensors_dir(hf_models[name]), load_safetensors_dir(back)
    assert set(again) == set(original)
    assert all(torch.equal(again[k], original[k]) for k in original)


# --------------------------------------------------------------------------------------------------------------------
# octo train checkpoint.load=
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(converted, tmp_path_factory) -> Path:
    """`octo train --recipe tiny-cpu` (the tiny-llama model) for one step from a TP=2 x PP=2 conversion, in one
    process (loading under TP=2 x PP=2 through the same training.build + checkpoint.load is torchrun_checks' job)."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    run([sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir", str(run_dir),
         f"checkpoint.load={converted['llama-tied']}", "train.iters=1", "schedule.warmup_iters=0",
         "precision.dtype=fp32", "logging.tensorboard=false"])
    return run_dir


def test_octo_train_starts_from_the_converted_weights(trained, hf_models):
    """Step 1's loss is the loss of the loaded weights: the HF model's mean token loss on the same 8 samples."""
    import torch.nn.functional as F

    from megatron_octo.config import load_recipe
    from megatron_octo.data.batches import microbatch_indices
    from megatron_octo.training.loop import make_dataset

    recipe = load_recipe("tiny-cpu", [])
    samples = [i for mb in microbatch_indices(0, global_batch=recipe.train.global_batch,
                                              micro_batch=recipe.train.micro_batch, dp=1, dp_rank=0) for i in mb]
    dataset = make_dataset(recipe)
    batch = torch.stack([dataset[i] for i in samples])  # [8, 65]
    logits = hf_logits(hf_models["llama-tied"], batch[:, :-1])
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()
    first = json.loads((trained / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(expected, rel=1e-5)
    assert first["loss"] > 1.0


# --------------------------------------------------------------------------------------------------------------------
# The command lines, with --verify
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(hf_models, converted, trained, tokens, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    paths = {"run_hf": root / "run-hf", "tp1": root / "qwen2-tp1", "tp1_logits": root / "qwen2-tp1.pt",
             "bad": root / "bad", "good": root / "good"}
    convert = ["convert", "--quiet", "--verify"]
    steps = [
        {"octo": convert + ["--from", "hf", "--to", "mcore", "--input", str(hf_models["llama-untied"]),
                            "--output", str(paths["good"]), "--tp", "2", "--pp", "2"]},
        {"octo": convert + ["--from", "hf", "--to", "mcore", "--input", str(hf_models["llama-untied"]),
                            "--output", str(paths["bad"])], "swap_kv": True},
        {"octo": convert + ["--from", "mcore", "--to", "mcore", "--input", str(converted["qwen2-untied-v300"]),
                            "--output", str(paths["tp1"]), "--tp", "1", "--pp", "1"]},
        {"logits": [str(paths["tp1"]), str(tokens), str(paths["tp1_logits"])]},
        {"octo": convert + ["--from", "mcore", "--to", "hf", "--input", str(trained), "--output",
                            str(paths["run_hf"]), "--tokenizer", str(hf_models["llama-tied"])]},
    ]
    (root / "steps.json").write_text(json.dumps(steps))
    proc = run([sys.executable, "-m", "tests.convert.cli_checks", str(root / "steps.json")])
    codes = json.loads(re.search(r"^CODES (.*)$", proc.stdout, re.M).group(1))
    return paths, codes, proc.stdout, proc.stderr


def verify_lines(stdout: str):
    pattern = r"^verify \((\w+) vs (\w+), (\d+) tokens\): max \|logit diff\| = (\S+) .*KL = (\S+) .*: (OK|FAILED)$"
    return [(m[0], m[1], float(m[3]), float(m[4]), m[5]) for m in re.findall(pattern, stdout, re.M)]


def test_verify_passes_for_correct_conversions(cli):
    paths, codes, stdout, _ = cli
    assert codes == [0, 1, 0, 0, 0]
    lines = verify_lines(stdout)
    assert [(a, b, ok) for a, b, _, _, ok in lines] == [("hf", "mcore", "OK"), ("mcore", "mcore", "OK"),
                                                        ("mcore", "hf", "OK")]
    assert all(diff <= ATOL and kl <= 1e-9 for _, _, diff, kl, _ in lines), lines
    assert paths["good"].is_dir() and paths["tp1"].is_dir()


def test_verify_catches_a_broken_weight_map(cli):
    paths, codes, _, stderr = cli
    assert codes[1] == 1
    line = next(l for l in stderr.splitlines() if l.startswith("octo: error: verify (hf vs mcore"))
    diff = float(re.search(r"max \|logit diff\| = (\S+)", line).group(1))
    assert diff > 0.1 and line.endswith("FAILED; nothing was written")
    assert not paths["bad"].exists()
    assert not [p for p in paths["bad"].parent.iterdir() if p.name.startswith(".bad.")]


def test_resharded_tp1_checkpoint_keeps_the_logits(cli, hf_models, tokens):
    paths, *_ = cli
    from torch.distributed.checkpoint import FileSystemReader as Reader

    from megatron_octo.training.checkpoint import resolve

    md = Reader(str(resolve(str(paths["tp1"])))).read_metadata().state_dict_metadata
    assert tuple(md["output_layer.weight"].size) == (384, 64)  # 300 padded to a multiple of 128 * tp=1
    expected = hf_logits(hf_models["qwen2-untied-v300"], torch.load(tokens))
    assert (torch.load(paths["tp1_logits"]) - expected).abs().max() <= ATOL


def test_training_run_directory_exports_its_newest_checkpoint(cli, trained, hf_models):
    """A run directory resolves to its newest complete (training) checkpoint; the export carries the tokenizer."""
    paths, *_ = cli
    out = paths["run_hf"]
    assert (trained / "checkpoints" / "iter_0000001").is_dir()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)  # <s> and </s> of the tokenizer
    assert config["rope_scaling"]["original_max_position_embeddings"] == 64
    assert (out / "tokenizer.json").read_bytes() == (hf_models["llama-tied"] / "tokenizer.json").read_bytes()
    trained_weights = load_safetensors_dir(out)
    start = load_safetensors_dir(hf_models["llama-tied"])
    assert set(trained_weights) == set(start)
    # One AdamW step at lr 3e-3 moved every matrix, by at most about lr per element.
    delta = (trained_weights["model.layers.0.mlp.up_proj.weight"] - start["model.layers.0.mlp.up_proj.weight"]).abs()
    assert 0 < delta.max() < 1e-2
