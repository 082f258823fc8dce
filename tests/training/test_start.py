"""``training.start``: the one path by which ``checkpoint.load`` and ``rl.init`` reach one of our checkpoints. Ours is
taken as it is; a Megatron-LM checkpoint (or a Hugging Face model) is converted once into ``RUN_DIR/init``, kept
while the setting names the same source, and converted again when it names another one."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_octo.training.checkpoint import CheckpointError, read_meta
from megatron_octo.training.start import HF, MEGATRON_LM, OURS, Origin, locate, prepare_source

MLM = Path(__file__).resolve().parents[1] / "convert" / "data" / "megatron_lm"


def _prepare(spec, run_dir, logs):
    return prepare_source(str(spec), run_dir, tp=1, pp=1, divisible=128, log=logs.append)


def test_a_megatron_lm_source_is_converted_once_then_again_when_the_setting_changes(tmp_path):
    run, logs = tmp_path / "run", []
    legacy, dist = MLM / "legacy" / "save", MLM / "torch_dist" / "save"
    first = _prepare(legacy, run, logs)
    assert first == run / "init" / "release"
    assert read_meta(first).lineage[-1]["path"] == str((legacy / "iter_0000010").resolve())
    assert read_meta(first).model["family"] == "qwen2" and len(logs) == 1
    stamp = (first / "metadata.json").stat().st_mtime_ns
    assert _prepare(f"{legacy}:10", run, logs) == first  # the same checkpoint, named as DIR:STEP: kept
    assert len(logs) == 1 and (first / "metadata.json").stat().st_mtime_ns == stamp
    again = _prepare(dist, run, logs)
    assert read_meta(again).lineage[-1]["path"] == str((dist / "iter_0000010").resolve())
    assert read_meta(again).model["family"] == "llama"
    assert "was converted from" in logs[1] and f"not {dist}: converting again" in logs[1]
    # ours is taken as it is, the conversion above included
    assert _prepare(run / "init", tmp_path / "other", logs) == again and not (tmp_path / "other").exists()


def test_locate_says_what_a_start_is(tmp_path):
    assert locate(str(MLM / "legacy" / "save")).kind == MEGATRON_LM
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")  # what marks an HF model directory (read when converted)
    assert locate(str(tmp_path / "hf")) == Origin(HF, tmp_path / "hf")
    ours = prepare_source(str(MLM / "legacy" / "save"), tmp_path, tp=1, pp=1, divisible=128, log=lambda _: None)
    assert locate(str(tmp_path / "init")) == Origin(OURS, ours)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        locate(str(tmp_path / "empty"))
