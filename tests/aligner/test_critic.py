"""``octo convert --to nemo --critic`` restored by NeMo-Aligner 0.7's own critic class, strictly, on CPU in the
aligner venv: ``load_from_nemo(MegatronGPTCriticModel, ...)`` as ``serve_ppo_critic.py`` calls it. The critic of a
tied Llama (no ``output_layer`` in the policy) and of an untied Qwen2 exported for TP=2 x PP=2: its trunk holds the
policy's weights (the output layer through which its hidden states give transformers' logits), its value head
starts at zero, and its values have NeMo-Aligner's critic shape [batch, sequence].
"""

from __future__ import annotations

from unittest.mock import patch

import pytest

pytest.importorskip("nemo.collections.nlp", reason="NeMo is not installed: this runs in the aligner venv "
                                                   "(make test-aligner)")
pytest.importorskip("nemo_aligner", reason="NeMo-Aligner is not installed: make test-aligner")

import torch  # noqa: E402
from megatron.core.models.gpt import GPTModel  # noqa: E402

from tests.aligner import nemo_cpu  # noqa: E402
from tests.aligner.test_nemo_restore import trainer  # noqa: E402,F401 (the module's one-process CPU Trainer)

pytestmark = pytest.mark.aligner
MODELS = ("llama-tied", "qwen2-tp2-pp2")


def restore_critic(path, trainer):  # noqa: F811
    """The exported directory restored as serve_ppo_critic.py does (strict), with the CPU overrides."""
    from nemo.collections.nlp.parts.nlp_overrides import NLPSaveRestoreConnector
    from nemo_aligner.models.nlp.gpt.megatron_gpt_critic import MegatronGPTCriticModel
    from nemo_aligner.utils.utils import load_from_nemo

    connector = NLPSaveRestoreConnector()
    connector.model_extracted_dir = str(path)
    cfg = MegatronGPTCriticModel.restore_from(str(path), trainer=trainer, return_config=True,
                                              save_restore_connector=connector)
    nemo_cpu.cpu_overrides(cfg)
    return load_from_nemo(MegatronGPTCriticModel, cfg, trainer, strict=True, restore_path=str(path))


@pytest.fixture(scope="module")
def critics(exports, trainer):  # noqa: F811
    return {name: restore_critic(exports[name]["dir"] / "critic", trainer).eval() for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_critic_restores_strictly_with_a_zero_value_head(name, exports, critics):
    critic = critics[name]
    assert type(critic).__name__ == "MegatronGPTCriticModel"
    assert critic.cfg.output_sequence is True and critic.cfg.share_embeddings_and_output_weights is False
    head = critic.model.rm_head
    assert tuple(head.weight.shape) == (1, critic.cfg.hidden_size) and head.weight.dtype == torch.float32
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    ids = torch.load(exports[name]["dir"] / "ids.pt")
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.no_grad():
        values = critic.model(ids, torch.tensor([ids.shape[1]] * ids.shape[0]), positions, None)
    assert tuple(values.shape) == tuple(ids.shape)  # one value per token: [b, s]
    assert torch.count_nonzero(values) == 0


@pytest.mark.parametrize("name", MODELS)
def test_critic_trunk_is_the_policy(name, exports, critics):
    """Every trunk tensor equals the policy's (the weight map's full-tensor result); the untied output layer is
    the policy's output layer, or its embedding when tied; hidden states through it give transformers' logits of the
    model without RoPE scaling (NeMo-Aligner's critic applies none: ``logits_unscaled_rope.pt``)."""
    info, critic = exports[name], critics[name]
    expected = torch.load(info["dir"] / "expected.pt")
    state = critic.model.state_dict()
    for key, want in expected.items():
        assert torch.equal(state[key].float(), want.float()), key
    lm_head = expected.get("output_layer.weight", expected["embedding.word_embeddings.weight"])
    assert torch.equal(state["output_layer.weight"].float(), lm_head.float())
    ids = torch.load(info["dir"] / "ids.pt")
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.no_grad(), patch.object(critic.model, "post_process", False):  # as GPTRewardModel.forward does
        hidden = GPTModel.forward(critic.model, input_ids=ids, position_ids=positions, attention_mask=None)  # [s, b, h]
    with torch.no_grad():
        logits = critic.model.output_layer(hidden)[0].transpose(0, 1)  # [b, s, padded vocab]
    # NeMo-Aligner's GPTRewardModel never applies NeMo's Llama-3 RoPE scaling (scale_positional_embedding), which
    # MegatronGPTModel and so the actor do: its critic sees the model with plain RoPE (no-op for Qwen2).
    reference = torch.load(info["dir"] / "logits_unscaled_rope.pt")
    torch.testing.assert_close(logits[..., : info["vocab_size"]].float(), reference, atol=1e-5, rtol=1e-5)
