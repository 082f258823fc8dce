"""Issue 16's bad inputs through the ``octo`` command: each exits non-zero with one line naming the problem and
the fix (``octo: error: ...``), prints no traceback, and leaves what was already written unchanged.

Inputs whose checks live with one subsystem are tested there as well (tests/data, tests/eval, tests/rl,
tests/launch); here each is one CLI call on a small fixture, and the directory it could write to is compared
before and after."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from megatron_octo.cli import main


def _tree(root: Path) -> dict:
    """Every file under root with its content hash (what "nothing already written changed" compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a file where directories are expected, broken inputs, a tiny model without a tokenizer."""
    root = tmp_path_factory.mktemp("bad")
    (root / "afile").write_text("not a directory\n")
    (root / "binary.yaml").write_bytes(b"\x00\x01\xff\xfe\x80")
    data = "".join(json.dumps({"text": f"document {i} " * 40}) + "\n" for i in range(100)).encode()
    gz = gzip.compress(data)
    (root / "cut.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    (root / "cut.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    (root / "num.jsonl").write_text('{"text": 123}\n')
    (root / "adir").mkdir()
    (root / "run").mkdir()
    (root / "run" / "metrics.jsonl").write_text('{"step": 1, "tokens": 8, "loss": 2.0, "lr": 0.1}\n{"step": 2,\n')
    (root / "out.png").write_bytes(b"an earlier plot")
    model = root / "model"
    model.mkdir()
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=1024).save_pretrained(model)
    (model / "model.safetensors").write_bytes(b"")
    empty = root / "eval"
    empty.mkdir()
    (empty / "gsm8k_test.jsonl").write_text("")
    (empty / "amc23_test.jsonl").write_text('{"problem": "1 + 1?", "answer": 2}\n')
    return root


def _ckpt(ws: Path) -> Path:
    """A Megatron-Core checkpoint of a tiny Llama (octo convert from HF) with one shard cut to a third."""
    ck = ws / "ckpt"
    if not ck.exists():
        from tests.eval.helpers import build_tiny_model

        hf = build_tiny_model(ws.parent / f"{ws.name}-hf")
        assert main(["convert", "--from", "hf", "--to", "mcore", "--input", str(hf), "--output", str(ck),
                     "--quiet"]) == 0
        shard = sorted(ck.rglob("*.distcp"))[0]
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 3])
    return ck


def _tok(ws: Path) -> Path:
    tok = ws / "tok"
    if not tok.exists():
        from megatron_octo.data.demo_corpus import corpus_texts, generate, train_tokenizer

        records = generate(seed=1, sizes={"web": 5, "qa": 10, "long_cot": 5, "chat": 5, "eval": 2})
        train_tokenizer(corpus_texts(records), tok, vocab_size=300)
    return tok


CASES = {
    "recipe file that is not text": (["recipe", "show", "{ws}/binary.yaml"], "not a text file"),
    "model.kv_channels=0": (["recipe", "show", "tiny-cpu", "model.kv_channels=0"], "model.kv_channels=0"),
    "train.iters and train.tokens both set": (["recipe", "show", "tiny-cpu", "train.iters=5", "train.tokens=640"],
                                              "both set"),
    "rl.rollout.max_response_tokens=0": (["rl", "--recipe", "tiny-cpu-grpo", "--run-dir", "{ws}/rl-run",
                                          "rl.rollout.max_response_tokens=0", "rl.init={ws}/model",
                                          "rl.prompts.path={ws}/eval/amc23_test.jsonl"],
                                         "max_response_tokens=0"),
    "eval --limit 0": (["eval", "--model", "{ws}/model", "--limit", "0"], "--limit: must be >= 1"),
    "eval --limit -1": (["eval", "--model", "{ws}/model", "--limit", "-1"], "--limit: must be >= 1"),
    "eval --max-new-tokens 0": (["eval", "--model", "{ws}/model", "--max-new-tokens", "0"], "--max-new-tokens"),
    "eval --verify-timeout 0": (["eval", "--model", "{ws}/model", "--verify-timeout", "0"], "--verify-timeout"),
    "eval unknown --dtype": (["eval", "--model", "{ws}/model", "--dtype", "fp33"], "--dtype: invalid choice"),
    "eval model without tokenizer": (["eval", "--model", "{ws}/model", "--benchmarks", "amc23", "--zero-shot",
                                      "--data-dir", "{ws}/eval", "--output", "{ws}/e1"], "has no tokenizer"),
    "eval empty benchmark file": (["eval", "--model", "{ws}/model", "--benchmarks", "gsm8k", "--zero-shot",
                                   "--data-dir", "{ws}/eval", "--output", "{ws}/e2"], "holds no items"),
    "preprocess truncated .gz": (["preprocess", "--input", "{ws}/cut.jsonl.gz", "--output-prefix", "{ws}/o1",
                                  "--tokenizer", "{tok}"], "truncated or corrupt gzip"),
    "preprocess truncated Parquet": (["preprocess", "--input", "{ws}/cut.parquet", "--output-prefix", "{ws}/o2",
                                      "--tokenizer", "{tok}"], "truncated or corrupt Parquet"),
    'preprocess {"text": 123}': (["preprocess", "--input", "{ws}/num.jsonl", "--output-prefix", "{ws}/o3",
                                  "--tokenizer", "{tok}"], "must be a string, got int"),
    "preprocess --output-prefix adir/": (["preprocess", "--input", "{ws}/num.jsonl", "--output-prefix", "{ws}/adir/",
                                          "--tokenizer", "{tok}"], "names a directory"),
    "launch --nodes 0": (["launch", "slurm", "--recipe", "tiny-cpu", "--nodes", "0", "--gpus-per-node", "1",
                          "--dry-run"], "--nodes: must be >= 1"),
    "launch --nproc 0": (["launch", "local", "--recipe", "tiny-cpu", "--nproc", "0", "--dry-run"],
                         "--nproc: must be >= 1"),
    "launch image name with spaces": (["launch", "slurm", "--recipe", "tiny-cpu", "--nodes", "1", "--gpus-per-node",
                                       "1", "--container", "my image", "--dry-run", "--run-dir", "{ws}/l1"],
                                      "whitespace"),
    "launch --command rl with a stable recipe": (["launch", "slurm", "--recipe", "octothinker-3b-stable", "--nodes",
                                                  "1", "--gpus-per-node", "8", "--command", "rl", "--dry-run",
                                                  "--run-dir", "{ws}/l2"], "rl.init is not set"),
    "launch --command rl, GRPO without rl.init": (["launch", "local", "--recipe", "tiny-cpu-grpo", "--nproc", "1",
                                                   "--command", "rl", "--dry-run", "--run-dir", "{ws}/l3"],
                                                  "rl.init is not set"),
    "plot with an unreadable metrics line": (["plot", "{ws}/run", "--output", "{ws}/out.png"], "metrics.jsonl:2"),
    "plot with a bad run dir and an existing output": (["plot", "{ws}/afile", "--output", "{ws}/out.png"],
                                                       "has no metrics.jsonl"),
    "demo --workdir that is a file": (["demo", "--workdir", "{ws}/afile"], "is a file"),
    "convert a truncated Megatron-Core checkpoint": (["convert", "--from", "mcore", "--to", "hf", "--input",
                                                      "{ckpt}", "--output", "{ws}/h1"], "truncated or damaged"),
    "convert a .nemo that is not a tar": (["convert", "--from", "nemo", "--to", "hf", "--input", "{ws}/binary.yaml",
                                           "--output", "{ws}/h2"], "--input"),
    "convert --max-shard-size 0": (["convert", "--from", "mcore", "--to", "hf", "--input", "{ckpt}", "--output",
                                    "{ws}/h3", "--max-shard-size", "0"], "--max-shard-size '0'"),
    "unknown command": (["evaluate"], "invalid choice"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, ws, capsys):
    argv, fragment = CASES[name]
    joined = " ".join(argv)
    fill = {"ws": str(ws), "tok": str(_tok(ws)) if "{tok}" in joined else "",
            "ckpt": str(_ckpt(ws)) if "{ckpt}" in joined else ""}
    argv = [a.format(**fill) for a in argv]
    before = _tree(ws)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0, name
    assert len(lines) == 1 and lines[0].startswith("octo: error: ") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert _tree(ws) == before, name
