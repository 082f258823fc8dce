"""Named presets hand out copies."""

from __future__ import annotations


def test_presets_cannot_be_changed_by_callers():
    import transformers

    from megatron_octo.models import llama

    before = llama.PRESETS["tiny-llama"]
    transformers.LlamaConfig(**llama.PRESETS["tiny-llama"])  # transformers 5 rewrites rope_scaling in place
    llama.PRESETS["tiny-llama"]["rope_scaling"]["factor"] = 123.0
    assert llama.PRESETS["tiny-llama"] == before
