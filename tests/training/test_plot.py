"""`octo plot`: branches continue from their source's tokens; outputs are protected."""

import json
from dataclasses import asdict

import pytest

from megatron_octo.training.checkpoint import META_FILE, CheckpointMeta
from megatron_octo.training.plot import PlotError, plot_runs, token_offset
from megatron_octo.utils.io import OutputExistsError


def fake_run(root, name, lineage=()):
    run = root / name
    ckpt = run / "checkpoints" / "iter_0000002"
    ckpt.mkdir(parents=True)
    meta = CheckpointMeta(step=2, tokens=1024, lineage=list(lineage))
    (ckpt / META_FILE).write_text(json.dumps(asdict(meta)))
    records = [{"step": s, "loss": 5.0 - s, "lr": 1e-3, "tokens": 512 * s} for s in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_branch_tokens_start_where_the_source_stopped(tmp_path):
    stable = fake_run(tmp_path, "stable")
    branch = fake_run(tmp_path, "decay", lineage=[{"path": "x", "step": 6, "tokens": 3072, "recipe": "tiny"}])
    assert token_offset(stable) == 0
    assert token_offset(branch) == 3072
    out = plot_runs([str(stable), str(branch)], str(tmp_path / "runs.png"))
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError):
        plot_runs([str(stable)], str(out))


def test_a_directory_without_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(PlotError, match="no metrics.jsonl"):
        plot_runs([str(tmp_path)], str(tmp_path / "x.png"))


def test_validation_losses_are_drawn_at_their_tokens(tmp_path):
    from megatron_octo.training.plot import _curves

    branch = fake_run(tmp_path, "decay", lineage=[{"path": "x", "step": 6, "tokens": 3072, "recipe": "tiny"}])
    records = [{"step": s, "loss": 5.0 - s, "lr": 1e-3, "tokens": 512 * s} for s in (1, 2)]
    records[1].update(val_loss=3.5, val_ppl=33.1)
    (branch / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (name, tokens, loss, lr, val), = _curves([str(branch)])
    assert val == [((3072 + 1024) / 1e6, 3.5)]  # the branch's offset applies to validation points too
    assert plot_runs([str(branch)], str(tmp_path / "v.png")).read_bytes()[:4] == b"\x89PNG"
