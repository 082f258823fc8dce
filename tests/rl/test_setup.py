"""What ``octo rl`` starts from: ``rl.init`` names one of our checkpoints, a Hugging Face model, or a Megatron-LM
checkpoint (save folder, iteration folder, ``DIR:STEP``; torch_dist or legacy), and the model is the checkpoint's.
The Megatron-LM fixtures are the ones written by Megatron-LM core_v0.16.1's own training code
(tests/convert/data/megatron_lm, see tests/convert/test_megatron_lm.py), with the logits Megatron-LM's model gave."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from megatron_octo.config.loader import load_recipe
from megatron_octo.rl.setup import RLSetupError, load_tokenizer, starting_point
from megatron_octo.training.checkpoint import read_meta, resolve
from tests.convert.conftest import hf_logits
from tests.rl.conftest import TOY_OVERRIDES, make_toy_tokenizer, run_octo_rl

MLM = Path(__file__).resolve().parents[1] / "convert" / "data" / "megatron_lm"
ATOL = 1e-5
"""As tests/convert/test_megatron_lm.py: Megatron-LM's fp32 logits against ours."""
# The fixtures' positions stop at 64 (max_position_embeddings): a 64-token sequence, prompts of at most 32 tokens
SHORT = ["train.seq_len=64", "rl.prompts.max_prompt_tokens=32"]
# One step as small as the loop takes: 2 prompts x 2 responses of 4 tokens, one update
SMALL = ["train.iters=1", "rl.prompts_per_step=2", "rl.mini_batch_prompts=2", "rl.rollout.n=2",
         "rl.rollout.max_response_tokens=4", "train.micro_batch=4"]


@pytest.fixture(scope="module")
def tokenizer_300(tmp_path_factory) -> Path:
    """The toy task's word-level tokenizer over the fixtures' 300 tokens (they were written with NullTokenizer)."""
    return make_toy_tokenizer(tmp_path_factory.mktemp("tok300"), 300)


def test_octo_rl_starts_from_a_legacy_megatron_lm_checkpoint(tokenizer_300, tmp_path):
    """rl.init = the legacy TP=2 x PP=2 save folder (tracker -> iter_0000010; Qwen2-shaped: QKV biases, tied), no
    model overrides: the run converts it once into RUN_DIR/init, trains that model, and its policy is Megatron-LM's
    (one step at LR 1e-12 leaves the weights as they started: the exported policy gives Megatron-LM's logits)."""
    run = tmp_path / "run"
    save = MLM / "legacy" / "save"
    args = [f"rl.init={save}", f"rl.prompts.tokenizer={tokenizer_300}",
            f"rl.prompts.path={tokenizer_300 / 'prompts.jsonl'}", *TOY_OVERRIDES, *SHORT, *SMALL,
            "schedule.lr=1e-12", "schedule.min_lr=1e-12"]
    proc, records = run_octo_rl(run, args)
    assert f"converting {save} (megatron-lm)" in proc.stdout
    # its checkpoints are Megatron-LM's format, and Megatron-LM would not restore the epsilon 1e-6 by itself
    warnings = [line for line in proc.stdout.splitlines() if "Megatron-LM" in line]
    assert len(warnings) == 1 and warnings[0].startswith("note: ") and warnings[0].endswith(
        "pass --norm-epsilon 1e-06"), proc.stdout[-2000:]
    assert "octo: warning:" not in proc.stderr
    assert (run / "init" / "latest_checkpointed_iteration.txt").read_text() == "release"
    lineage = read_meta(resolve(str(run / "init"))).lineage
    assert lineage[-1]["path"] == str((save / "iter_0000010").resolve()) and lineage[-1]["step"] == 10
    model = load_recipe(str(run / "recipe.yaml")).model
    assert (model.family, model.add_qkv_bias, model.tie_word_embeddings, model.vocab_size) == ("qwen2", True, True, 300)
    assert (model.rotary_base, model.norm_epsilon, model.hidden_size) == (20000.0, 1e-6, 32)  # its command.json
    assert [r["step"] for r in records] == [1]
    assert 1.0 <= records[0]["logprob_mismatch"] < 1.001  # the engine got the same weights
    ids, expected = torch.load(MLM / "legacy" / "tokens.pt"), torch.load(MLM / "legacy" / "logits.pt")
    assert (hf_logits(run / "hf", ids) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("form", ["save", "iter", "step"])
def test_rl_init_names_a_megatron_lm_checkpoint_in_each_form(form):
    save = MLM / "torch_dist" / "save"
    spec = {"save": save, "iter": save / "iter_0000010", "step": f"{save}:10"}[form]
    recipe = load_recipe("tiny-cpu-grpo", [f"rl.init={spec}", *SHORT])
    point = starting_point(recipe)
    assert (point.kind, point.path.resolve()) == ("megatron-lm", (save / "iter_0000010").resolve())
    m = recipe.model  # command.json of the torch_dist fixture: GQA 4 heads / 2 groups, untied, base 500000
    assert (m.family, m.num_query_groups, m.tie_word_embeddings, m.rotary_base, m.vocab_size) == (
        "llama", 2, False, 500000.0, 300)


def test_the_tokenizer_beside_a_megatron_lm_checkpoint_is_the_one_its_args_name(tokenizer_300, tmp_path):
    """Megatron-LM records its HuggingFaceTokenizer's directory (tokenizer_model); without one, a one-line error
    names the fix."""
    recipe = load_recipe("tiny-cpu-grpo", [f"rl.init={MLM / 'legacy' / 'save'}", *SHORT])
    with pytest.raises(RLSetupError, match=r"^no tokenizer found beside rl.init=.*: set rl.prompts.tokenizer=DIR$"):
        load_tokenizer(recipe, starting_point(recipe))
    save = tmp_path / "save"
    (save / "iter_0000010").mkdir(parents=True)
    (save / "latest_checkpointed_iteration.txt").write_text("10")
    state = torch.load(MLM / "torch_dist" / "save" / "iter_0000010" / "common.pt", weights_only=False)
    state["args"].tokenizer_type, state["args"].tokenizer_model = "HuggingFaceTokenizer", str(tokenizer_300)
    for f in (MLM / "torch_dist" / "save" / "iter_0000010").iterdir():
        if f.name != "common.pt":
            (save / "iter_0000010" / f.name).symlink_to(f)
    torch.save(state, save / "iter_0000010" / "common.pt")
    recipe = load_recipe("tiny-cpu-grpo", [f"rl.init={save}", *SHORT])
    assert load_tokenizer(recipe, starting_point(recipe)).convert_tokens_to_ids("w7") == 7


def test_rl_init_naming_nothing_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    recipe = load_recipe("tiny-cpu-grpo", [f"rl.init={tmp_path / 'empty'}"])
    with pytest.raises(RLSetupError, match=r"^rl.init: ") as excinfo:
        starting_point(recipe)
    assert "\n" not in str(excinfo.value)
    (tmp_path / "save").mkdir()
    (tmp_path / "save" / "latest_checkpointed_iteration.txt").write_text("7")
    recipe.rl.init = str(tmp_path / "save")
    with pytest.raises(RLSetupError, match=r"^rl.init: .* names '7' but"):
        starting_point(recipe)
