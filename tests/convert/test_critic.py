"""``octo convert --to nemo --critic`` (convert.critic): what the critic checkpoint holds, checked against
NeMo-Aligner 0.7's ``GPTRewardModel`` as read from its source (an untied ``output_layer``, ``rm_head.weight``
[1, hidden] and ``rm_head.bias`` [1] in fp32, the critic's config fields), and one-line refusals with nothing written.
tests/aligner/test_critic.py restores the same export with NeMo-Aligner's own ``MegatronGPTCriticModel``.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from torch.distributed.checkpoint import FileSystemReader

from megatron_octo.cli import main
from megatron_octo.convert import to_nemo

from .conftest import load_safetensors_dir
from .test_convert import assert_nothing_written, assert_one_line_error

HIDDEN = 64  # tiny-llama's hidden_size (models.llama.PRESETS)


def _read(ckpt, key):
    from torch.distributed.checkpoint import load

    md = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata[key]
    out = {key: torch.empty(tuple(md.size), dtype=md.properties.dtype)}
    load(out, storage_reader=FileSystemReader(str(ckpt)), no_dist=True)
    return out[key]


@pytest.mark.parametrize("name", ["llama-tied", "llama-untied"])
def test_critic_checkpoint_layout(name, hf_models, tmp_path):
    out = to_nemo("hf", hf_models[name], tmp_path / "critic", tp=2, quiet=True, critic=True).output
    weights = out / "model_weights"
    md = FileSystemReader(str(weights)).read_metadata().state_dict_metadata
    assert tuple(md["model.rm_head.weight"].size) == (1, HIDDEN)
    assert tuple(md["model.rm_head.bias"].size) == (1,)
    assert md["model.rm_head.weight"].properties.dtype == torch.float32
    assert not [k for k in md if k.startswith("model.rm_head._extra_state")]  # GPTRewardModel drops it
    assert torch.count_nonzero(_read(weights, "model.rm_head.weight")) == 0
    hf = load_safetensors_dir(hf_models[name])
    lm_head = hf.get("lm_head.weight", hf["model.embed_tokens.weight"])  # tied: the embedding
    vocab = lm_head.shape[0]
    assert torch.equal(_read(weights, "model.output_layer.weight")[:vocab], lm_head)
    assert torch.equal(_read(weights, "model.embedding.word_embeddings.weight")[:vocab],
                       hf["model.embed_tokens.weight"])
    conf = yaml.safe_load((out / "model_config.yaml").read_text())
    assert conf["target"] == "nemo_aligner.models.nlp.gpt.megatron_gpt_critic.MegatronGPTCriticModel"
    assert conf["share_embeddings_and_output_weights"] is False
    assert conf["output_sequence"] is True and conf["use_avg_pool"] is False
    assert conf["regression"]["num_attributes"] == 1
    assert conf["tokenizer"]["type"] == str(out / "tokenizer")


def test_critic_refusals(hf_models, tmp_path, capsys):
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(hf_models["llama-tied"], no_tok)
    for f in no_tok.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    cases = [
        (["--from", "hf", "--to", "hf", "--input", str(hf_models["llama-tied"])], "--critic writes NeMo-Aligner's"),
        (["--from", "hf", "--to", "mcore", "--input", str(hf_models["llama-tied"])], "it needs --to nemo"),
        (["--from", "hf", "--to", "nemo", "--input", str(no_tok)], "--critic: "),
        (["--from", "hf", "--to", "nemo", "--input", str(hf_models["llama-tied"]), "--tp", "3"], "--tp 3 must divide"),
    ]
    for argv, fragment in cases:
        out = tmp_path / "out"
        assert main(["convert", *argv, "--critic", "--output", str(out)]) == 2
        assert_one_line_error(capsys, fragment)
        assert_nothing_written(out)
