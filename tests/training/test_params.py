"""Weights leave the trainer current: with the distributed optimizer and ``overlap_param_gather`` (plus
``overlap_grad_reduce``), Megatron-Core defers each update's parameter all-gather to the next forward pass. The RL
engine's weights after an update, the saved checkpoint (model and optimizer) and its Hugging Face export must equal,
bit for bit, those of the same run without the overlaps. Real torchrun processes on gloo
(tests/training/torchrun_params.py); a control run with the fix switched off shows the check can fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("torchrun_params.py")
DISTOPT = ["parallel.distributed_optimizer=true"]
OVERLAP = DISTOPT + ["parallel.overlap_param_gather=true", "parallel.overlap_grad_reduce=true"]
LAYOUTS = {"dp2": (2, []), "tp2-dp2": (4, ["parallel.tp=2"])}


def run(out: Path, nproc: int, overrides, disable_fix: bool = False) -> Path:
    out.mkdir(parents=True)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    if disable_fix:
        env["OCTO_TEST_STALE_PARAMS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(SCRIPT), str(out), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def checkpoint_tensors(out: Path) -> dict:
    """Every tensor of the saved checkpoint (model and optimizer), read with torch.distributed.checkpoint."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    path = out / "run" / "checkpoints" / "iter_0000003"
    flat = out / "checkpoint.pt"
    dcp_to_torch_save(str(path), str(flat))
    state = torch.load(flat, weights_only=False)
    return {k: v for k, v in _flatten(state) if isinstance(v, torch.Tensor)}


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), obj


def hf_export(out: Path) -> dict:
    from safetensors.torch import load_file

    from megatron_octo.convert import mcore_to_hf

    mcore_to_hf(str(out / "run"), str(out / "hf"), quiet=True)
    return load_file(str(out / "hf" / "model.safetensors"))


def engines(out: Path) -> dict:
    return {p.name: torch.load(p) for p in sorted(out.glob("engine_rank*.pt"))}


def differing(a: dict, b: dict) -> list:
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory):
    """The runs without the overlaps, one per layout, made once: the control reuses the dp2 one."""
    made = {}

    def get(layout):
        if layout not in made:
            nproc, extra = LAYOUTS[layout]
            made[layout] = run(tmp_path_factory.mktemp(f"plain-{layout}") / "out", nproc, extra + DISTOPT)
        return made[layout]

    return get


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_overlapped_param_gather_saves_exports_and_syncs_current_weights(layout, plain_runs, tmp_path):
    nproc, extra = LAYOUTS[layout]
    plain = plain_runs(layout)
    overlap = run(tmp_path / "overlap", nproc, extra + OVERLAP)
    plain_engines, overlap_engines = engines(plain), engines(overlap)
    # one engine per data-parallel replica (its model-parallel rank 0)
    assert list(plain_engines) == (["engine_rank0.pt", "engine_rank1.pt"] if layout == "dp2"
                                   else ["engine_rank0.pt", "engine_rank2.pt"])
    for name in plain_engines:
        assert differing(plain_engines[name], overlap_engines[name]) == [], name
    ckpt_plain, ckpt_overlap = checkpoint_tensors(plain), checkpoint_tensors(overlap)
    assert any(k.startswith("optimizer.") for k in ckpt_plain) and "embedding.word_embeddings.weight" in ckpt_plain
    assert differing(ckpt_plain, ckpt_overlap) == []
    assert differing(hf_export(plain), hf_export(overlap)) == []


def test_without_the_fix_the_weights_are_one_update_stale(plain_runs, tmp_path):
    """Control: with ``make_params_current`` switched off, the same comparison finds stale tensors, in the engine
    and in the checkpoint (the bug this guards against)."""
    plain = plain_runs("dp2")
    stale = run(tmp_path / "stale", 2, OVERLAP, disable_fix=True)
    for name, state in engines(plain).items():
        assert differing(state, engines(stale)[name]), name
    model = lambda d: {k: v for k, v in d.items() if not k.startswith("optimizer.")}  # noqa: E731
    assert differing(model(checkpoint_tensors(plain)), model(checkpoint_tensors(stale)))
