"""Run in the *main* venv by tests/aligner (``python -m tests.aligner.make_fixture OUT``): what the aligner venv
checks, made with the main stack, which the aligner venv cannot import (it runs Megatron-Core 0.11).

For each model of ``MODELS``, in OUT/NAME: ``hf/`` (a random tiny transformers model with its tokenizer),
``nemo/`` (its ``octo convert --to nemo`` export for the model's TP x PP), ``critic/`` (its
``octo convert --to nemo --critic`` export, NeMo-Aligner's PPO critic), ``logits.pt`` (transformers' fp32 logits
of ``ids.pt``) and ``expected.pt`` (the Megatron-Core state dict of the local layer spec, built from the HF tensors
by ``models.weight_map.state_dict_from_hf``: the full-tensor weight map, not the converter's streaming row maps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# name -> (tests.convert.conftest model, tp, pp of the export)
MODELS = {
    "llama-tied": ("llama-tied", 1, 1),          # llama3 RoPE scaling, GQA, tied embeddings
    "qwen2-tp2-pp2": ("qwen2-untied-v300", 2, 2),  # QKV biases, untied, 300 tokens padded to 512 for TP=2
}
IDS = [[1, 5, 9, 100, 3, 17, 44, 2, 150, 7, 61, 199]]


def make(out: Path) -> dict:
    from megatron_octo.convert import to_nemo
    from megatron_octo.convert.sources import open_hf
    from megatron_octo.models import get_family
    from tests.convert.conftest import hf_logits, load_safetensors_dir, make_hf_model

    ids = torch.tensor(IDS)
    index = {}
    for seed, (name, (model, tp, pp)) in enumerate(MODELS.items()):
        root = out / name
        hf = make_hf_model(model, root / "hf", seed=seed)
        to_nemo("hf", hf, root / "nemo", tp=tp, pp=pp, quiet=True)
        to_nemo("hf", hf, root / "critic", tp=tp, pp=pp, quiet=True, critic=True)
        torch.save(ids, root / "ids.pt")
        torch.save(hf_logits(hf, ids).float(), root / "logits.pt")
        torch.save(_logits_without_rope_scaling(hf, ids), root / "logits_unscaled_rope.pt")
        _, cfg = open_hf(hf, 128)
        family = get_family(cfg.family)
        expected = family.state_dict_from_hf(load_safetensors_dir(hf), cfg, use_te=False, tp=tp)
        torch.save(expected, root / "expected.pt")
        index[name] = {"tp": tp, "pp": pp, "vocab_size": cfg.vocab_size}
    (out / "index.json").write_text(json.dumps(index, indent=2))
    return index


def _logits_without_rope_scaling(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """transformers' fp32 logits of the model with its RoPE scaling removed: what NeMo-Aligner 0.7's reward model
    and critic compute (their model provider never applies NeMo's ``scale_positional_embedding``)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(path))
    saved = json.loads((Path(path) / "config.json").read_text())
    theta = saved.get("rope_theta") or saved["rope_parameters"]["rope_theta"]
    if hasattr(config, "rope_parameters"):  # transformers 5 keeps the RoPE settings here
        config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    else:
        config.rope_scaling = None
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), config=config, dtype=torch.float32,
                                                              attn_implementation="eager")
    with torch.no_grad():
        return model.eval()(ids).logits.float()


if __name__ == "__main__":
    print(json.dumps(make(Path(sys.argv[1]))))
