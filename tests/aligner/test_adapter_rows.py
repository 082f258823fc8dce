"""The vLLM adapter's rollout rows judged by NeMo-Aligner 0.7's own end-of-generation check, as its PPO actor runs it
(``MegatronGPTActorModel.infer``: ``verify_is_valid_and_clamp_range_`` with ``TrackLengthGPTModelTextGenerationStrategy``
and NeMo's Hugging Face tokenizer). A row the check does not count as ended is masked out of the actor's loss.

The rows come from the vLLM venv (``tests.aligner.adapter_rows``; ``$OCTO_VLLM_PYTHON``, else .venv-vllm): two rows
that stop on an end string and one that runs into the length limit. Kept end strings (the adapter, as TensorRT-LLM)
make the first two ended; the same rows with the end strings cut (the engine's default, what ``octo rl`` uses) are
not — the negative control that shows why the adapter keeps them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("nemo_aligner", reason="NeMo-Aligner is not installed: make test-aligner")

import torch  # noqa: E402

from megatron_octo.convert.nemo_format import readable_by_transformers4  # noqa: E402
from tests.aligner.conftest import REPO  # noqa: E402

pytestmark = pytest.mark.aligner


def vllm_python() -> Path:
    return Path(os.environ.get("OCTO_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    python = vllm_python()
    if not python.is_file():
        pytest.skip(f"the vLLM venv's python {python} is missing: run `make vllm-venv` or set OCTO_VLLM_PYTHON")
    out = tmp_path_factory.mktemp("adapter-rows")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(python), "-m", "tests.aligner.adapter_rows", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The tokenizer files as our NeMo export bundles them (transformers 5 names a class transformers 4 lacks).
    readable_by_transformers4(out / "model")
    return torch.load(out / "rows.pt"), out / "model"


def nemo_is_end(tokens, lengths, prompt_lengths, end_strings, model_dir, max_new):
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo_aligner.utils.text_generation_utils import (
        TrackLengthGPTModelTextGenerationStrategy, verify_is_valid_and_clamp_range_,
    )

    tokenizer = AutoTokenizer(str(model_dir))  # made readable by NeMo's transformers 4 in ``rows``
    actor = SimpleNamespace(training=False, tokenizer=tokenizer, model=None)  # what the strategy reads of the actor
    strategy = TrackLengthGPTModelTextGenerationStrategy(model=actor, context_lengths=prompt_lengths,
                                                         max_length=max_new)
    return verify_is_valid_and_clamp_range_(tokens.clone(), lengths, strategy, tokenizer, end_strings).tolist()


def test_rows_ending_on_an_end_string_count_as_ended(rows):
    data, model_dir = rows
    is_end = nemo_is_end(data["response_tokens"], data["response_lengths"], data["prompt_lengths"],
                         data["end_strings"], model_dir, data["max_new"])
    assert is_end == data["stopped"]
    # the run-on row used its whole budget: prompt + max_new tokens
    assert int(data["response_lengths"][2]) == int(data["prompt_lengths"][2]) + data["max_new"]


def test_rows_with_end_strings_cut_would_be_masked_out(rows):
    data, model_dir = rows
    is_end = nemo_is_end(data["cut_tokens"], data["cut_lengths"], data["prompt_lengths"], data["end_strings"],
                         model_dir, data["max_new"])
    assert is_end == [False, False, False]
