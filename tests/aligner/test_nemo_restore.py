"""Our NeMo exports restored by NeMo 2.2's own code (``MegatronGPTModel.restore_from``) and by NeMo-Aligner 0.7's
``load_from_nemo``, on CPU in the aligner venv: every tensor as the HF weights say, logits equal to transformers'
to 1e-5 in fp32 (Llama with llama3 RoPE scaling applied by NeMo itself, tied; Qwen2 with QKV biases exported for
TP=2 x PP=2 and restored in one process).
"""

from __future__ import annotations

import pytest

pytest.importorskip("nemo.collections.nlp", reason="NeMo is not installed: this runs in the aligner venv "
                                                   "(make test-aligner)")
pytest.importorskip("nemo_aligner", reason="NeMo-Aligner is not installed: make test-aligner")

import torch  # noqa: E402
from torch.distributed.checkpoint import FileSystemReader  # noqa: E402

from tests.aligner import nemo_cpu  # noqa: E402

pytestmark = pytest.mark.aligner
LOADERS = ("nemo", "aligner")


@pytest.fixture(scope="module")
def trainer():
    """A one-process CPU Trainer with NeMo's own strategy (it sets up gloo and Megatron-Core's groups)."""
    nemo_cpu.apply()
    from lightning.pytorch import Trainer
    from nemo.collections.nlp.parts.nlp_overrides import NLPDDPStrategy

    return Trainer(accelerator="cpu", devices=1, strategy=NLPDDPStrategy(), precision=32, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False)


def restore(path, trainer, loader: str):
    """The exported directory restored in place, with the CPU overrides of ``nemo_cpu.cpu_overrides``."""
    from nemo.collections.nlp.models.language_modeling.megatron_gpt_model import MegatronGPTModel
    from nemo.collections.nlp.parts.nlp_overrides import NLPSaveRestoreConnector

    connector = NLPSaveRestoreConnector()
    connector.model_extracted_dir = str(path)
    cfg = MegatronGPTModel.restore_from(str(path), trainer=trainer, return_config=True,
                                        save_restore_connector=connector)
    nemo_cpu.cpu_overrides(cfg)
    if loader == "aligner":
        from nemo_aligner.utils.utils import load_from_nemo

        return load_from_nemo(MegatronGPTModel, cfg, trainer, strict=True, restore_path=str(path))
    return MegatronGPTModel.restore_from(str(path), trainer=trainer, override_config_path=cfg, strict=True,
                                         save_restore_connector=connector)


@pytest.fixture(scope="module")
def restored(exports, trainer):
    """(name, loader) -> (the restored MegatronGPTModel, its fp32 logits of the fixture's ids [b, s, vocab])."""
    out = {}
    for name, info in exports.items():
        ids = torch.load(info["dir"] / "ids.pt")
        for loader in LOADERS:
            model = restore(info["dir"] / "nemo", trainer, loader).eval()
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            with torch.no_grad():
                logits = model.model(ids, positions, None)  # causal mask from the layer spec
            out[(name, loader)] = (model, logits[..., : info["vocab_size"]].float())
    return out


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", ["llama-tied", "qwen2-tp2-pp2"])
def test_logits_match_transformers(name, loader, exports, restored):
    reference = torch.load(exports[name]["dir"] / "logits.pt")
    logits = restored[(name, loader)][1]
    assert logits.shape == reference.shape
    assert (logits - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", ["llama-tied", "qwen2-tp2-pp2"])
def test_every_tensor_is_the_hf_weight(name, loader, exports, restored):
    """The restored GPTModel's state dict is, tensor for tensor, the HF weights through the full-tensor weight map
    (padding rows included); nothing is missing or extra."""
    expected = torch.load(exports[name]["dir"] / "expected.pt")
    state = {k: v for k, v in restored[(name, loader)][0].model.state_dict().items() if "_extra_state" not in k}
    assert sorted(state) == sorted(expected)
    assert [k for k in expected if not torch.equal(state[k], expected[k])] == []


def test_every_key_nemo_asks_for_is_stored(exports, restored):
    """The sharded state dict NeMo builds for the config names only keys the export holds, under ``model.``."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    model = restored[("qwen2-tp2-pp2", "nemo")][0]
    asked = {v.key for v in model.sharded_state_dict().values() if isinstance(v, ShardedTensor)}
    stored = FileSystemReader(str(exports["qwen2-tp2-pp2"]["dir"] / "nemo" / "model_weights")).read_metadata()
    assert asked and all(k.startswith("model.") for k in asked)
    assert asked <= set(stored.state_dict_metadata)


def test_nemo_applies_the_llama3_rope_scaling(exports, restored):
    """NeMo rescales the inverse frequencies itself from the exported scale_factor and its three companions:
    with factor 4 over 64 original positions at head_dim 16 and theta 5e5, frequency k is 5e5^(-k/8), kept when
    its wavelength 2*pi/f < 16 (64/4), divided by 4 when > 64 (64/1), blended in between."""
    import math

    inv = restored[("llama-tied", "nemo")][0].model.rotary_pos_emb.inv_freq
    base = [500000.0 ** (-k / 8) for k in range(8)]
    want = []
    for f in base:
        wavelen = 2 * math.pi / f
        if wavelen < 16:
            want.append(f)
        elif wavelen > 64:
            want.append(f / 4)
        else:
            smooth = (64 / wavelen - 1) / (4 - 1)
            want.append((1 - smooth) * f / 4 + smooth * f)
    assert torch.allclose(inv.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
    assert any(2 * math.pi / f < 16 for f in base) and any(2 * math.pi / f > 64 for f in base)
    assert any(16 <= 2 * math.pi / f <= 64 for f in base)
