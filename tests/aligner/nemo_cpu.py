"""NeMo 2.2 on a CPU without apex or Transformer Engine: the few stand-ins its GPT restore path needs.

NeMo 2.2's ``MegatronGPTModel`` supports building on a CPU accelerator, but a few module-level gates assume the NGC
container. Each stand-in below does what the real thing does for this case, and nothing else:

- ``megatron_octo.parallel.cpu_compat``: the main stack's CPU layer (plain torch, importable here) for
  ``torch.cuda.set_device`` and Megatron-Core's CUDA RNG tracker.
- ``NVIDIA_PYTORCH_VERSION``: NeMo's ``_enable_nvidia_optimizations`` passes it to ``re.fullmatch`` unguarded
  (a TypeError outside the container); 25.01 is the PyTorch container NeMo 2.2.1 names in its manifest.
- ``nlp_overrides.HAVE_APEX``: ``NLPDDPStrategy.__init__`` refuses to start without apex, which the restore path
  does not otherwise use (apex is not on PyPI).
- ``build_model.set_defaults_if_not_set_tensor_model_parallel_attributes``: NeMo imports it from apex;
  Megatron-Core has the same function (apex's was its origin), which is bound in its place.
- ``nlp_model.get_megatron_pretrained_bert_models``: NeMo's NLPModel imports the BERT spec (which needs TE) to
  list pretrained BERT names; a GPT has no ``language_model.pretrained_model_name``, so the list is irrelevant.
- ``megatron_gpt_model.get_specs``: builds every spec name's layer spec, including TE-only ones (gemma2, te_gpt);
  the stand-in returns what it returns for ``name=''`` with ``transformer_engine=False``: Megatron-Core's local
  GPT layer spec, and refuses anything else.
- ``megatron_gpt_reward_model.get_specs`` (NeMo-Aligner's reward model and critic): it binds NeMo's ``get_specs`` at
  import and calls it without ``use_te``, i.e. the TE spec (its GPU path); here the local spec, which declares the
  same checkpoint keys (``reward_model_specs``).
"""

from __future__ import annotations

import os

_applied = {"done": False}


def local_specs(spec_name, transformer_config=None, use_te=True, hyena_cfg=None, fp8=False):
    """NeMo's ``get_specs`` for the one case this environment can build."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    if spec_name != "" or use_te:
        raise RuntimeError(f"only the local layer spec runs here (asked for name={spec_name!r}, use_te={use_te}): "
                           f"set model.transformer_engine=false")
    return get_gpt_layer_local_spec(transformer_config.num_moe_experts, transformer_config.moe_grouped_gemm)


def reward_model_specs(spec_name, transformer_config=None, use_te=True, hyena_cfg=None, fp8=False):
    """NeMo-Aligner's reward-model ``get_specs`` call (always ``use_te=True``) answered with the local spec."""
    return local_specs(spec_name, transformer_config, use_te=False)


def apply() -> None:
    """Install the stand-ins (idempotent)."""
    if _applied["done"]:
        return
    os.environ.setdefault("NVIDIA_PYTORCH_VERSION", "25.01")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    from megatron_octo.parallel import cpu_compat

    cpu_compat.enable()
    from megatron.core.tensor_parallel.layers import set_defaults_if_not_set_tensor_model_parallel_attributes
    from nemo.collections.nlp.models import nlp_model
    from nemo.collections.nlp.models.language_modeling import megatron_gpt_model
    from nemo.collections.nlp.modules.common.megatron import build_model
    from nemo.collections.nlp.parts import nlp_overrides

    nlp_overrides.HAVE_APEX = True
    build_model.set_defaults_if_not_set_tensor_model_parallel_attributes = (
        set_defaults_if_not_set_tensor_model_parallel_attributes)
    nlp_model.get_megatron_pretrained_bert_models = lambda: []
    megatron_gpt_model.get_specs = local_specs
    from nemo_aligner.models.nlp.gpt import megatron_gpt_reward_model

    megatron_gpt_reward_model.get_specs = reward_model_specs
    _applied["done"] = True


def cpu_overrides(cfg) -> None:
    """What a CPU run changes in an exported model_config.yaml (an OmegaConf DictConfig, edited in place): the
    local layer spec, one process (the weights are global tensors, so any layout loads them), fp32."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.transformer_engine = False
        cfg.tensor_model_parallel_size = 1
        cfg.pipeline_model_parallel_size = 1
        cfg.precision = 32
