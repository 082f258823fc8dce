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
    "demo --workdir inside a file": (["demo", "--workdir", "{ws}/afile/demo"], "afile is a file, not a directory"),
    "train --run-dir that is a file": (["train", "--recipe", "tiny-cpu", "--run-dir", "{ws}/afile"],
                                       "--run-dir {ws}/afile: {ws}/afile is a file, not a directory"),
    "train --run-dir inside a file": (["train", "--recipe", "tiny-cpu", "--run-dir", "{ws}/afile/run"],
                                      "--run-dir {ws}/afile/run: {ws}/afile is a file, not a directory"),
    "rl --run-dir that is a file": (["rl", "--recipe", "tiny-cpu-grpo", "--run-dir", "{ws}/afile",
                                     "rl.init={ws}/model", "rl.prompts.path={ws}/eval/amc23_test.jsonl"],
                                    "--run-dir {ws}/afile: {ws}/afile is a file"),
    "rl --run-dir inside a file": (["rl", "--recipe", "tiny-cpu-grpo", "--run-dir", "{ws}/afile/run",
                                    "rl.init={ws}/model", "rl.prompts.path={ws}/eval/amc23_test.jsonl"],
                                   "--run-dir {ws}/afile/run: {ws}/afile is a file"),
    "eval --output that is a file": (["eval", "--model", "{ws}/model", "--output", "{ws}/afile"],
                                     "--output {ws}/afile: {ws}/afile is a file, not a directory"),
    "eval --output inside a file": (["eval", "--model", "{ws}/model", "--output", "{ws}/afile/e"],
                                    "--output {ws}/afile/e: {ws}/afile is a file, not a directory"),
    "convert --output that is a file": (["convert", "--from", "hf", "--to", "mcore", "--input", "{ws}/model",
                                         "--output", "{ws}/afile", "--overwrite"], "{ws}/afile is a file"),
    "convert --output inside a file": (["convert", "--from", "hf", "--to", "mcore", "--input", "{ws}/model",
                                        "--output", "{ws}/afile/c"], "{ws}/afile is a file, not a directory"),
    "launch local --run-dir inside a file": (["launch", "local", "--recipe", "tiny-cpu", "--nproc", "1",
                                              "--run-dir", "{ws}/afile/run"], "{ws}/afile is a file"),
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
    fragment = fragment.format(**fill)
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


READ_ONLY = {
    "train --run-dir": ["train", "--recipe", "tiny-cpu", "--run-dir", "{ro}/run"],
    "rl --run-dir": ["rl", "--recipe", "tiny-cpu-grpo", "--run-dir", "{ro}", "rl.init={ws}/model",
                     "rl.prompts.path={ws}/eval/amc23_test.jsonl"],
    "eval --output": ["eval", "--model", "{ws}/model", "--output", "{ro}/e"],
    "convert --output": ["convert", "--from", "hf", "--to", "mcore", "--input", "{ws}/model", "--output", "{ro}/c"],
    "demo --workdir": ["demo", "--workdir", "{ro}/demo"],
    "preprocess --output-prefix": ["preprocess", "--input", "{ws}/num.jsonl", "--output-prefix", "{ro}/corpus",
                                   "--tokenizer", "{ws}/nothing-read-before-the-check"],
    "launch local --run-dir": ["launch", "local", "--recipe", "tiny-cpu", "--nproc", "1", "--run-dir", "{ro}/run"],
}


@pytest.fixture
def read_only_dir(ws, monkeypatch):
    """``ws/ro`` with mode 0o555. Root passes permission bits, so when the tests run as root (CI) ``os.access``
    answers for this directory as the kernel does for anyone else; the real kernel check by a non-root user is
    test_check_writable_dir_as_a_user_without_write_permission."""
    import os

    ro = ws / "ro"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: (not mode & os.W_OK or Path(p) != ro)
                            and real(p, mode, **kw))
    yield ro
    ro.chmod(0o755)


@pytest.mark.parametrize("name", list(READ_ONLY))
def test_read_only_output_is_one_line_and_changes_nothing(name, ws, read_only_dir, capsys):
    argv = [a.format(ws=ws, ro=read_only_dir) for a in READ_ONLY[name]]
    flag = name.split()[-1]
    before = _tree(ws)
    capsys.readouterr()
    assert main(argv) == 2, name
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"octo: error: {flag} {read_only_dir}"), lines[0]
    assert f": {read_only_dir} is not writable (permissions or a read-only file system): pick another {flag}" \
        in lines[0], lines[0]
    assert _tree(ws) == before and not any(read_only_dir.iterdir())


def _as_user(uid, fn):
    """``fn()``'s result (or the message of what it raised), run in a forked child under ``uid`` (None: as is)."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            try:
                out = str(fn())
            except Exception as exc:  # the message is the result
                out = f"{type(exc).__name__}: {exc}"
            os.write(write, out.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    return out


def test_check_writable_dir_as_a_user_without_write_permission():
    """The kernel's answer, not a patched one: the check runs as a user who is not root (``nobody`` in a forked
    child when the tests run as root) against directories with mode 0o555 and 0o777."""
    import os
    import shutil
    import tempfile

    from megatron_octo.utils.io import check_writable_dir

    root = Path(tempfile.mkdtemp(prefix="octo-ro-", dir="/tmp"))  # pytest's tmp_path is root's, mode 0o700
    try:
        root.chmod(0o755)
        (root / "ro").mkdir()
        (root / "ro").chmod(0o555)
        (root / "rw").mkdir()
        (root / "rw").chmod(0o777)
        uid = 65534 if os.geteuid() == 0 else None
        assert _as_user(uid, lambda: check_writable_dir(root / "rw" / "run", "--run-dir")) == "None"
        assert _as_user(uid, lambda: check_writable_dir(root / "ro" / "run", "--run-dir")) == (
            f"OutputPathError: --run-dir {root}/ro/run: {root}/ro is not writable (permissions or a read-only file "
            f"system): pick another --run-dir or make it writable")
    finally:
        (root / "ro").chmod(0o755)
        shutil.rmtree(root)
