"""HF -> Megatron-Core (TP=2 x PP=2) -> HF in this process: bit-identical tensors, transformers loads the export with
the original's logits, resharding, dtypes, and one-line errors that leave nothing behind."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint import FileSystemReader

from megatron_octo.cli import main
from megatron_octo.convert import ConvertError, hf_to_mcore, mcore_to_hf, mcore_to_mcore
from megatron_octo.models import family_for_hf_config
from megatron_octo.training.checkpoint import read_meta, resolve

from .conftest import MODELS, hf_logits, load_safetensors_dir


def stored_shapes(ckpt: Path) -> dict:
    """Global shapes by key: stored under the names GPTModel declares (no ``module.`` prefix), as
    training.checkpoint saves and loads them and Megatron-LM writes them."""
    md = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    assert not any(k.startswith("module.") for k in md), sorted(md)[:3]
    return {k: tuple(v.size) for k, v in md.items() if hasattr(v, "size")}


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory):
    """Each TP=2 x PP=2 checkpoint back to HF, in shards of at most 100 kB (so the index is exercised)."""
    root = tmp_path_factory.mktemp("back")
    return {name: mcore_to_hf(path, root / name, max_shard_size="100KB", quiet=True).output
            for name, path in converted.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_is_bit_identical(name, hf_models, exported):
    original, back = load_safetensors_dir(hf_models[name]), load_safetensors_dir(exported[name])
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    index = json.loads((exported[name] / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original) and len(set(index["weight_map"].values())) > 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_loads_in_transformers_with_the_original_logits(name, hf_models, exported):
    import transformers

    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(exported[name]), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ids = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(hf_logits(exported[name], ids), hf_logits(hf_models[name], ids))
    before = transformers.AutoConfig.from_pretrained(str(hf_models[name])).to_dict()
    after = transformers.AutoConfig.from_pretrained(str(exported[name])).to_dict()
    for key in ("transformers_version", "_name_or_path"):
        before.pop(key), after.pop(key)
    assert after == before
    for file in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (exported[name] / file).read_bytes() == (hf_models[name] / file).read_bytes(), file


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_metadata_and_stored_shapes(name, hf_models, converted):
    ckpt = converted[name]
    assert resolve(str(ckpt)) == ckpt
    meta = read_meta(ckpt)
    assert (meta.kind, meta.step, meta.tokens) == ("model", 0, 0)
    assert (meta.layout["tp"], meta.layout["pp"]) == (2, 2)
    config = json.loads((hf_models[name] / "config.json").read_text())
    expected = family_for_hf_config(config).from_hf(config)
    assert meta.model == dataclasses.asdict(expected)
    assert (ckpt / "hf_assets" / "tokenizer.json").is_file() and (ckpt / "hf_assets" / "config.json").is_file()
    shapes = stored_shapes(ckpt)
    vocab = MODELS[name][1]["vocab_size"]
    padded = {256: 256, 300: 512}[vocab]  # a multiple of 128 * tp=2 = 256
    assert shapes["embedding.word_embeddings.weight"] == (padded, 64)
    assert ("output_layer.weight" in shapes) == (not MODELS[name][1]["tie_word_embeddings"])
    assert shapes["decoder.layers.self_attention.linear_qkv.weight"] == (4, 128, 64)  # 2 groups x (2 + 2) x 16
    assert ("decoder.layers.self_attention.linear_qkv.bias" in shapes) == name.startswith("qwen2")


def test_padding_rows_are_zero(converted):
    from megatron_octo.convert.dist_io import DistCheckpoint
    from megatron_octo.convert.layout import McoreTensor

    ckpt = DistCheckpoint(converted["qwen2-untied-v300"])
    rows = ckpt.read(McoreTensor("output_layer.weight", None, (512, 64)), 0, 512)
    assert rows[300:].abs().max() == 0 and rows[:300].abs().min() > 0


def test_reshard_to_tp1_pp1_keeps_every_tensor(converted, hf_models, tmp_path):
    name = "qwen2-untied-v300"
    out = resolve(str(mcore_to_mcore(converted[name], tmp_path / "tp1", tp=1, pp=1, quiet=True).output))
    assert stored_shapes(out)["output_layer.weight"] == (384, 64)  # a multiple of 128 * tp=1
    meta = read_meta(out)
    assert (meta.layout["tp"], meta.layout["pp"], meta.kind) == (1, 1, "model")
    assert meta.lineage[-1]["path"] == str(converted[name].resolve())
    back = mcore_to_hf(out, tmp_path / "hf", quiet=True).output
    original, again = load_safetensors_dir(hf_models[name]), load_safetensors_dir(back)
    assert set(again) == set(original) and all(torch.equal(again[k], original[k]) for k in original)


def test_bf16_output(hf_models, tmp_path):
    name = "llama-untied"
    ckpt = resolve(str(hf_to_mcore(hf_models[name], tmp_path / "bf16", tp=2, dtype="bf16", quiet=True).output))
    md = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    assert {v.properties.dtype for v in md.values() if hasattr(v, "properties")} == {torch.bfloat16}
    back = mcore_to_hf(ckpt, tmp_path / "hf", quiet=True).output
    assert json.loads((back / "config.json").read_text())["torch_dtype"] == "bfloat16"
    original, again = load_safetensors_dir(hf_models[name]), load_safetensors_dir(back)
    assert all(torch.equal(again[k], original[k].to(torch.bfloat16)) for k in original)
    fp32 = mcore_to_hf(ckpt, tmp_path / "hf32", dtype="fp32", quiet=True).output
    assert load_safetensors_dir(fp32)["lm_head.weight"].dtype == torch.float32


def test_progress_lines(hf_models, tmp_path, capsys):
    hf_to_mcore(hf_models["llama-tied"], tmp_path / "p")
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.startswith("hf -> mcore: ")][-1]
    assert "26/26 tensors" in last and "done in" in last  # tied: embedding, final norm + 4 layers x 6


# --------------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing left under (or beside) the output name
# --------------------------------------------------------------------------------------------------------------------


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def drop_tensor(path: Path, name: str) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    del tensors[name]
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def shard_and_lose_one(path: Path) -> None:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path))
    (path / "model.safetensors").unlink()
    model.save_pretrained(str(path), max_shard_size="100KB")
    sorted(path.glob("model-*.safetensors"))[-1].unlink()


BAD_HF = {
    "unsupported model type": (lambda p: edit_config(p, model_type="mistral"), [],
                               "model_type 'mistral' is not supported"),
    "unsupported architecture": (lambda p: edit_config(p, architectures=["LlamaForSequenceClassification"]), [],
                                 "architectures ['LlamaForSequenceClassification'] are not supported"),
    "unsupported rope": (lambda p: edit_config(p, rope_parameters={"rope_type": "yarn", "factor": 2.0}), [],
                         "rope_scaling type 'yarn' is not supported"),
    "tp does not divide groups": (lambda p: None, ["--tp", "4"], "--tp 4 must divide the 4 attention heads and the 2"),
    "missing shard": (shard_and_lose_one, [], "shard(s) missing"),
    "missing tensor": (lambda p: drop_tensor(p, "model.layers.2.mlp.up_proj.weight"), [],
                       "lacks 1 tensor(s) its config.json needs (first: model.layers.2.mlp.up_proj.weight)"),
    "shape mismatch": (lambda p: edit_config(p, intermediate_size=96), [],
                       "model.layers.0.mlp.gate_proj.weight has shape (128, 64), config.json says (96, 64)"),
    "no weights": (lambda p: (p / "model.safetensors").unlink(), [], "has no model.safetensors"),
    "no config": (lambda p: (p / "config.json").unlink(), [], "has no config.json"),
}


def assert_one_line_error(capsys, fragment: str) -> None:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("octo: error: "), captured.err
    assert fragment in lines[0], lines[0]


def assert_nothing_written(output: Path) -> None:
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


@pytest.mark.parametrize("case", sorted(BAD_HF))
def test_bad_hf_input(case, hf_models, tmp_path, capsys):
    damage, extra, fragment = BAD_HF[case]
    src = copy_model(hf_models["llama-untied"], tmp_path / "in")
    damage(src)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["convert", "--from", "hf", "--to", "mcore", "--input", str(src), "--output", str(out), *extra]) == 2
    assert_one_line_error(capsys, fragment)
    assert_nothing_written(out)


def test_existing_output_needs_overwrite(hf_models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["convert", "--from", "hf", "--to", "mcore", "--input", str(hf_models["llama-tied"]), "--output", str(out),
            "--quiet"]
    assert main(argv) == 2
    assert_one_line_error(capsys, "already exists: pass --overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert main(argv + ["--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and read_meta(resolve(str(out))).kind == "model"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_killed_conversions_hidden_output_is_removed_by_the_next_run(hf_models, tmp_path):
    from tests.utils.test_io import dead_pid

    out = tmp_path / "out"
    stale = tmp_path / f".out.tmp-{dead_pid()}"  # what a conversion killed midway leaves
    stale.mkdir()
    (stale / "__0_0.distcp").write_bytes(b"partial")
    hf_to_mcore(hf_models["llama-tied"], out, quiet=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and read_meta(resolve(str(out))).kind == "model"


@pytest.mark.parametrize("argv, fragment", [
    (["--from", "mcore", "--to", "hf", "--input", "{hf}"], "no complete checkpoint under"),
    (["--from", "mcore", "--to", "hf", "--input", "{ckpt}", "--tp", "2"], "apply to --to mcore only"),
    (["--from", "hf", "--to", "hf", "--input", "{hf}"], "--from hf --to hf is not a conversion"),
    (["--from", "mcore", "--to", "hf", "--input", "{ckpt}", "--tokenizer", "{empty}"], "holds no tokenizer files"),
    (["--from", "mcore", "--to", "mcore", "--input", "{ckpt}", "--tp", "3"], "--tp 3 must divide"),
])
def test_bad_requests(argv, fragment, hf_models, converted, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fill = {"hf": str(hf_models["llama-tied"]), "ckpt": str(converted["llama-tied"]), "empty": str(tmp_path / "empty")}
    out = tmp_path / "out"
    assert main(["convert", *[a.format(**fill) for a in argv], "--output", str(out)]) == 2
    assert_one_line_error(capsys, fragment)
    assert_nothing_written(out)


def test_output_inside_input_is_refused(converted, capsys):
    out = converted["llama-tied"] / "hf"
    assert main(["convert", "--from", "mcore", "--to", "hf", "--input", str(converted["llama-tied"]),
                 "--output", str(out)]) == 2
    assert_one_line_error(capsys, "overlaps --input")
    assert_nothing_written(out)


def test_damaged_checkpoint_is_refused(converted, tmp_path, capsys):
    ckpt = copy_model(converted["llama-untied"], tmp_path / "ckpt")
    meta = json.loads((ckpt / "octo_checkpoint.json").read_text())
    meta["model"]["ffn_hidden_size"] = 96
    (ckpt / "octo_checkpoint.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert main(["convert", "--from", "mcore", "--to", "hf", "--input", str(ckpt), "--output", str(out)]) == 2
    assert_one_line_error(capsys, "decoder.layers.mlp.linear_fc1.weight has shape (4, 256, 64), the checkpoint's "
                                  "model config says (4, 192, 64)")
    assert_nothing_written(out)


def test_failure_while_writing_leaves_nothing(hf_models, tmp_path, monkeypatch):
    import megatron_octo.convert.sources as convert_module

    calls = {"n": 0}
    real_read = convert_module.HFRows.read

    def failing_read(self, t, start, stop):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk went away")
        return real_read(self, t, start, stop)

    monkeypatch.setattr(convert_module.HFRows, "read", failing_read)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk went away"):
        hf_to_mcore(hf_models["llama-tied"], out, quiet=True)
    assert calls["n"] == 10
    assert_nothing_written(out)


def test_conversion_error_type_is_a_value_error():
    assert issubclass(ConvertError, ValueError)
