"""Megatron-LM checkpoints in: fixtures written by Megatron-LM core_v0.16.1's own training code
(``tools/megatron_lm_fixtures.py``, committed under tests/convert/data/megatron_lm) convert to Hugging Face with
the logits Megatron-LM's own model gave (fp32, 1e-5).

- ``torch_dist``: TP=2, GQA (4 heads, 2 groups), untied, RMSNorm eps 1e-5, SwiGLU, RoPE base 500000.
- ``legacy``: the ``torch`` format at TP=2 x PP=2 (four rank files), tied, QKV biases, RMSNorm eps 1e-6, base 20000.
- ``zarr``: the torch_dist fixture's weights and args written again by Megatron-Core 0.8's zarr strategy (read here
  through TensorStore); the same logits.

The arguments each was written with are in its command.json; the numbers below restate them by hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_octo.cli import main
from megatron_octo.config import ConfigError
from megatron_octo.convert import mcore_to_hf, mcore_to_mcore

from .conftest import hf_logits
from .test_convert import assert_nothing_written, assert_one_line_error

DATA = Path(__file__).parent / "data" / "megatron_lm"
ATOL = 1e-5
# (family, tied, qkv bias, rope base, norm eps, layers, hidden, ffn, heads, groups, head dim, vocab)
EXPECTED = {
    "torch_dist": ("llama", False, False, 500000.0, 1e-5, 4, 32, 96, 4, 2, 8, 300),
    "legacy": ("qwen2", True, True, 20000.0, 1e-6, 4, 32, 96, 4, 2, 8, 300),
    "zarr": ("llama", False, False, 500000.0, 1e-5, 4, 32, 96, 4, 2, 8, 300),
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


# --------------------------------------------------------------------------------------------------------------------
# Out: Megatron-LM's own load_checkpoint reads what we write (needs a checkout of its core_v0.16.1 tag)
# --------------------------------------------------------------------------------------------------------------------

MEGATRON_LM = os.environ.get("MEGATRON_LM_DIR")
needs_megatron_lm = pytest.mark.skipif(
    not MEGATRON_LM or not (Path(MEGATRON_LM) / "megatron" / "training" / "checkpointing.py").is_file(),
    reason="set MEGATRON_LM_DIR to a checkout of Megatron-LM's core_v0.16.1 tag (its training code is not in the "
           "megatron-core wheel)")
HARNESS = Path(__file__).resolve().parents[2] / "tools" / "megatron_lm_cpu.py"
# Megatron-LM's run: the model comes from our checkpoint's args (--use-checkpoint-args, its load_args_from_checkpoint)
RUN_ARGS = ["--use-checkpoint-args", "--tokenizer-type", "NullTokenizer", "--seed", "1234",
            "--distributed-backend", "gloo", "--transformer-impl", "local", "--no-gradient-accumulation-fusion",
            "--no-masked-softmax-fusion", "--no-bias-swiglu-fusion", "--no-rope-fusion", "--no-persist-layer-norm",
            "--use-cpu-initialization", "--attention-backend", "unfused", "--save-interval", "1000",
            "--ckpt-format", "torch_dist"]


def not_restored_by_megatron_lm(ckpt: Path) -> list:
    """The flags our warning (``megatron_lm.loading_caveat``) tells a Megatron-LM user to pass for the model args
    its load_args_from_checkpoint does not restore (no _set_arg for them): the norm epsilon and RoPE scaling."""
    from megatron_octo.convert.megatron_lm import loading_caveat
    from megatron_octo.convert.sources import model_config_of

    warning = loading_caveat(model_config_of(ckpt)[0])
    return warning.rsplit(": pass ", 1)[1].split() if warning else []


def megatron_lm(tmp_path: Path, tokens: torch.Tensor, vocab: int, args, save_iteration=None) -> tuple:
    """Megatron-LM's setup_model_and_optimizer (with its load_checkpoint) in one CPU process: (report, logits)."""
    torch.save(tokens, tmp_path / "tokens.pt")
    extra = ["--save-iteration", str(save_iteration)] if save_iteration is not None else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", str(HARNESS),
           "--megatron-lm", MEGATRON_LM, "--tokens", str(tmp_path / "tokens.pt"), "--logits",
           str(tmp_path / "logits.pt"), "--vocab", str(vocab), "--report", str(tmp_path / "report.json"), *extra,
           "--", *RUN_ARGS, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HARNESS.parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    loaded = re.findall(r"successfully loaded checkpoint from .* at iteration (\d+)", proc.stdout + proc.stderr)
    assert loaded, "Megatron-LM did not report a loaded checkpoint:\n" + proc.stdout[-3000:]
    return json.loads((tmp_path / "report.json").read_text()), torch.load(tmp_path / "logits.pt")


def dcp_tensors(ckpt: Path) -> dict:
    """Every tensor of a torch_dist checkpoint, whole."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = ckpt.parent / f"{ckpt.name}.pt"
    dcp_to_torch_save(str(ckpt), str(out))
    return {k: v for k, v in torch.load(out, weights_only=False).items() if isinstance(v, torch.Tensor)}


@needs_megatron_lm
def test_megatron_lm_loads_our_converted_weights_as_release(hf_models, tmp_path):
    """hf -> mcore output (tracker 'release'): Megatron-LM's --load starts from it at iteration 0 with the HF model's
    logits (Qwen2 with QKV biases, untied, 300 tokens padded to 384)."""
    from megatron_octo.convert import hf_to_mcore

    out = hf_to_mcore(hf_models["qwen2-untied-v300"], tmp_path / "mcore", quiet=True).output
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    report, logits = megatron_lm(tmp_path, ids, 300, [
        "--load", str(out), "--vocab-size", "300", "--micro-batch-size", "1", "--global-batch-size", "1",
        "--seq-length", "16", "--train-iters", "1", "--lr", "1e-4", *not_restored_by_megatron_lm(out)])
    assert report["iteration"] == 0
    assert (logits - hf_logits(hf_models["qwen2-untied-v300"], ids)).abs().max() <= ATOL


@needs_megatron_lm
def test_megatron_lm_resumes_our_training_checkpoint(tmp_path):
    """`octo train` (tiny-cpu, 2 steps of 8 x 64 tokens) -> Megatron-LM's load_checkpoint resumes it: iteration 2,
    16 consumed samples, its scheduler at sample 16 with our schedule (it asserts every field equal), the same
    logits; what it saves back holds our weights and Adam moments bit for bit."""
    from megatron_octo.convert import mcore_to_hf

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir",
                           str(run), "train.iters=2", "schedule.warmup_iters=1", "logging.tensorboard=false",
                           "model.rope_scaling_factor=null"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    report, logits = megatron_lm(tmp_path, ids, 256, [
        "--load", str(run / "checkpoints"), "--save", str(tmp_path / "resave"), "--vocab-size", "256",
        "--micro-batch-size", "2", "--global-batch-size", "8", "--seq-length", "64", "--train-iters", "2",
        "--lr", "3e-3", "--min-lr", "3e-4", "--lr-decay-style", "cosine", "--lr-warmup-iters", "1",
        "--weight-decay", "0.1", *not_restored_by_megatron_lm(run)], save_iteration=2)
    assert (report["iteration"], report["consumed_train_samples"], report["scheduler_num_steps"]) == (2, 16, 16)
    assert report["flops"] > 0
    hf = mcore_to_hf(run, tmp_path / "hf", quiet=True).output
    assert (logits - hf_logits(hf, ids)).abs().max() <= ATOL
    ours = dcp_tensors(run / "checkpoints" / "iter_0000002")
    theirs = dcp_tensors(tmp_path / "resave" / "iter_0000002")
    assert any(k.startswith("optimizer.state.exp_avg_sq.") for k in ours)
    for key, tensor in ours.items():
        assert torch.equal(theirs[key], tensor), key


# --------------------------------------------------------------------------------------------------------------------
# Shapes from the checkpoint: checkpoint.load / branch_from / rl.init / model.from_hf decide the model
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checkpoint_load_takes_the_model_of_a_megatron_lm_checkpoint(name):
    from megatron_octo.config.loader import load_recipe

    family, tied, bias, base, eps, layers, hidden, ffn, heads, groups, head_dim, vocab = EXPECTED[name]
    m = load_recipe("tiny-cpu", [f"checkpoint.load={DATA / name / 'save'}"]).model
    assert (m.family, m.tie_word_embeddings, m.add_qkv_bias, m.rotary_base, m.norm_epsilon) == (
        family, tied, bias, base, eps)
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.num_query_groups,
            m.kv_channels, m.vocab_size) == (layers, hidden, ffn, heads, groups, head_dim, vocab)
    assert m.rope_scaling_factor is None and m.preset is None  # tiny-llama's scaling and name are gone


def test_model_from_hf_and_rl_init_take_the_hf_config(hf_models):
    from megatron_octo.config.loader import load_recipe

    m = load_recipe("tiny-cpu", [f"model.from_hf={hf_models['qwen2-untied-v300']}"]).model
    assert (m.family, m.vocab_size, m.add_qkv_bias, m.tie_word_embeddings) == ("qwen2", 300, True, False)
    r = load_recipe("tiny-cpu-grpo", [f"rl.init={hf_models['llama-untied']}"])
    assert (r.model.family, r.model.tie_word_embeddings) == ("llama", False)


def test_explicit_model_fields_must_agree_with_the_checkpoint(capsys, tmp_path):
    save = DATA / "torch_dist" / "save"
    argv = ["train", "--recipe", "tiny-cpu", "--run-dir", str(tmp_path / "run"), f"checkpoint.load={save}",
            "model.rotary_base=10000", "model.norm_epsilon=1e-6", "model.hidden_size=32"]
    assert main(argv) == 2
    assert_one_line_error(capsys, "model.rotary_base: recipe 10000, checkpoint 500000.0; model.norm_epsilon: recipe "
                                  "1e-06, checkpoint 1e-05: drop these model fields to take the checkpoint's")
    assert not (tmp_path / "run").exists()


def test_a_stage_rendered_before_its_source_saved_keeps_the_recipe_model(tmp_path):
    """`octo launch slurm --dependency afterok:JOB checkpoint.branch_from=STABLE` renders the branch while STABLE is
    a run directory with no checkpoint yet: the recipe's model stands (the job takes the checkpoint's when it starts);
    a directory that holds something unreadable is still an error."""
    from megatron_octo.config.loader import load_recipe

    stable = tmp_path / "stable"
    (stable / "checkpoints").mkdir(parents=True)
    for field in ("checkpoint.branch_from", "checkpoint.load"):
        m = load_recipe("tiny-cpu", [f"{field}={stable}"]).model
        assert (m.preset, m.num_layers) == ("tiny-llama", 4)  # tiny-cpu.yaml's preset
    (stable / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"^checkpoint.load="):
        load_recipe("tiny-cpu", [f"checkpoint.load={stable}"])


def test_octo_train_from_a_legacy_megatron_lm_checkpoint(tmp_path):
    """`octo train --recipe tiny-cpu checkpoint.load=<legacy TP=2 x PP=2 save>` with no model overrides: the run
    converts it into RUN_DIR/init and trains that model (at LR 1e-12 the weights stay Megatron-LM's: its logits)."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir",
                           str(run), f"checkpoint.load={DATA / 'legacy' / 'save'}", "train.iters=1",
                           "train.seq_len=16", "schedule.lr=1e-12", "schedule.min_lr=1e-12", "schedule.warmup_iters=0",
                           "optimizer.weight_decay=0", "logging.tensorboard=false"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pass --norm-epsilon 1e-06" in proc.stdout  # the model's epsilon, which Megatron-LM would not restore
    assert (run / "init" / "latest_checkpointed_iteration.txt").read_text() == "release"
    hf = mcore_to_hf(run, tmp_path / "hf", quiet=True).output
    ids, expected = torch.load(DATA / "legacy" / "tokens.pt"), torch.load(DATA / "legacy" / "logits.pt")
    assert (hf_logits(hf, ids) - expected).abs().max() <= ATOL


# --------------------------------------------------------------------------------------------------------------------
# What Megatron-LM builds differently from a model we write for it: a one-line warning, checked against its own code
# --------------------------------------------------------------------------------------------------------------------

# Megatron-LM core_v0.16.1 under --use-rope-scaling: factor 8 (GPTModel's default; gpt_builders.py passes no factor),
# low 1, high 4, original 8192 (RotaryEmbedding._apply_scaling's defaults); --norm-epsilon defaults to 1e-5.
MEGATRON_LM_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}


def _model(**fields):
    from megatron_octo.config.schema import ModelConfig

    return ModelConfig(**{"family": "llama", "rope_scaling_factor": None, "norm_epsilon": 1e-5, **fields})


@pytest.mark.parametrize("fields, says, not_said", [
    ({"rope_scaling_factor": 32.0}, ["will not reproduce this model", "RoPE scaling factor 8, low 1, high 4, "
      "original max 8192 (this model: factor 32, low 1, high 4, original max 8192)", "pass --use-rope-scaling"],
     ["--norm-epsilon"]),
    ({"rope_scaling_factor": 8.0, "rope_original_max_position": 64}, ["(this model: factor 8, low 1, high 4, "
      "original max 64)"], []),
    ({"rope_scaling_factor": 8.0, "norm_epsilon": 1e-6}, [
        "builds the model without RoPE scaling and with norm epsilon 1e-05, not 1e-06",
        "pass --use-rope-scaling --norm-epsilon 1e-06"], ["will not reproduce"]),
    ({"norm_epsilon": 1e-6}, ["with norm epsilon 1e-05, not 1e-06", "pass --norm-epsilon 1e-06"],
     ["RoPE", "--use-rope-scaling"]),
])
def test_what_megatron_lm_builds_differently_is_one_line(fields, says, not_said):
    from megatron_octo.convert.megatron_lm import loading_caveat

    line = loading_caveat(_model(**fields))
    assert line is not None and "\n" not in line
    for fragment in says:
        assert fragment in line, line
    for fragment in not_said:
        assert fragment not in line, line


def test_nothing_to_say_of_an_unscaled_model_with_megatron_lms_epsilon():
    from megatron_octo.convert.megatron_lm import loading_caveat

    assert loading_caveat(_model()) is None


def test_convert_to_mcore_warns_once_and_to_hf_not(hf_models, tmp_path, capsys):
    """tiny-llama's scaling (factor 4, original 64) is not Megatron-LM's: `--to mcore` warns in one line."""
    src = hf_models["llama-tied"]
    assert main(["convert", "--from", "hf", "--to", "mcore", "--input", str(src), "--output",
                 str(tmp_path / "mcore")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("octo: warning: ")]
    assert len(warnings) == 1 and "(this model: factor 4, low 1, high 4, original max 64)" in warnings[0]
    assert main(["convert", "--from", "mcore", "--to", "hf", "--input", str(tmp_path / "mcore"), "--output",
                 str(tmp_path / "hf")]) == 0
    assert "octo: warning:" not in capsys.readouterr().err


def test_a_stage_warns_of_the_checkpoints_it_saves():
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.training.stage import megatron_lm_warning

    assert "(this model: factor 4, low 1, high 4, original max 64)" in megatron_lm_warning(load_recipe("tiny-cpu"))
    assert megatron_lm_warning(load_recipe("tiny-cpu", ["checkpoint.save=false"])) is None
    assert megatron_lm_warning(load_recipe("tiny-cpu", ["model.rope_scaling_factor=null"])) is None


def _with_rope_scaling(src: Path, out: Path, scaling: dict) -> Path:
    """A copy of the HF model ``src`` with another llama3 RoPE scaling (transformers 5 writes ``rope_parameters``,
    the theta included; the Hub's older files ``rope_scaling``)."""
    shutil.copytree(src, out)
    config = json.loads((out / "config.json").read_text())
    key = "rope_parameters" if "rope_parameters" in config else "rope_scaling"
    config[key] = {**(config.get(key) or {}), **scaling}
    (out / "config.json").write_text(json.dumps(config))
    return out


@needs_megatron_lm
@pytest.mark.parametrize("scaling", ["megatron-lm's", "tiny-llama's"])
def test_megatron_lm_builds_what_the_warning_says(scaling, hf_models, tmp_path):
    """The tiny Llama with Megatron-LM's own llama3 scaling, converted: with the flags the warning names, Megatron-LM
    gives its logits. With tiny-llama's scaling (factor 4, original 64) and the factor passed too
    (--rope-scaling-factor 4), Megatron-LM gives the logits of the same weights under factor 8 / 1 / 4 / 8192."""
    from megatron_octo.convert import hf_to_mcore

    hf = hf_models["llama-tied"]
    if scaling == "megatron-lm's":
        hf = _with_rope_scaling(hf, tmp_path / "hf", MEGATRON_LM_SCALING)
    result = hf_to_mcore(hf, tmp_path / "mcore", quiet=True)
    (warning,) = result.warnings
    flags = warning.rsplit(": pass ", 1)[1].split()
    assert flags == ["--use-rope-scaling"]
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    _, logits = megatron_lm(tmp_path, ids, 256, [
        "--load", str(result.output), "--vocab-size", "256", "--micro-batch-size", "1", "--global-batch-size", "1",
        "--seq-length", "16", "--train-iters", "1", "--lr", "1e-4", *flags, "--rope-scaling-factor", "4"])
    ours = hf_logits(hf, ids)
    if scaling == "megatron-lm's":
        assert "will not reproduce" not in warning
        assert (logits - ours).abs().max() <= ATOL
    else:
        assert "will not reproduce" in warning
        assert (logits - ours).abs().max() > 100 * ATOL  # not this model ...
        theirs = hf_logits(_with_rope_scaling(hf, tmp_path / "as-megatron", MEGATRON_LM_SCALING), ids)
        assert (logits - theirs).abs().max() <= ATOL  # ... but Megatron-LM's scaling of its weights
