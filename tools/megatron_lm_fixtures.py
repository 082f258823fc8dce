#!/usr/bin/env python
"""Write the tiny Megatron-LM checkpoints the converter tests read, with Megatron-LM's own code, and their logits.

    python tools/megatron_lm_fixtures.py --megatron-lm ~/Megatron-LM [--out tests/convert/data/megatron_lm]

``--megatron-lm``: a checkout of Megatron-LM's ``core_v0.16.1`` tag. Each fixture is one run of
``tools/megatron_lm_cpu.py`` under torchrun on CPU: Megatron-LM's ``initialize_megatron`` +
``setup_model_and_optimizer`` (its ``gpt_builder``, local layer spec), the logits of fixed tokens through its model,
then its ``save_checkpoint`` at iteration 10 (weights only: ``--no-save-optim --no-save-rng`` keeps them small).

    OUT/<name>/save/          the save folder (tracker + iter_0000010/)
    OUT/<name>/tokens.pt      LongTensor [2, 16]
    OUT/<name>/logits.pt      Megatron-LM's fp32 logits [2, 16, 300] (the unpadded vocabulary)
    OUT/<name>/command.json   the Megatron-LM arguments

Fixtures: ``torch_dist`` (TP=2: GQA, untied, RMSNorm, SwiGLU, RoPE base 500000), ``legacy`` (the ``torch`` format
at TP=2 x PP=2: tied embeddings, QKV biases, RoPE base 20000). ``zarr``: the torch_dist fixture's weights and args
written again by an older Megatron-Core's own zarr strategy (``tools/megatron_core_zarr_writer.py``; same logits)::

    git -C Megatron-LM archive core_v0.8.0 megatron/core | tar -x -C /tmp/mcore08
    pip install --target /tmp/zarr2 "zarr<3" "setuptools<70"     # zarr 2.x, and pkg_resources for that core
    python tools/megatron_lm_fixtures.py --megatron-lm ... --only zarr --zarr-pythonpath /tmp/mcore08:/tmp/zarr2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "convert" / "data" / "megatron_lm"
VOCAB = 300
TOKENS_SHAPE = (2, 16)

MODEL = ["--num-layers", "4", "--hidden-size", "32", "--ffn-hidden-size", "96", "--num-attention-heads", "4",
         "--group-query-attention", "--num-query-groups", "2", "--kv-channels", "8", "--seq-length", "16",
         "--max-position-embeddings", "64", "--position-embedding-type", "rope", "--normalization", "RMSNorm",
         "--swiglu", "--disable-bias-linear", "--tokenizer-type", "NullTokenizer", "--vocab-size", str(VOCAB),
         "--make-vocab-size-divisible-by", "64", "--init-method-std", "0.2"]
RUN = ["--micro-batch-size", "1", "--global-batch-size", "2", "--train-iters", "10", "--lr", "1e-3",
       "--min-lr", "1e-4", "--lr-decay-style", "cosine", "--lr-warmup-iters", "2", "--seed", "1234",
       "--distributed-backend", "gloo", "--transformer-impl", "local", "--no-gradient-accumulation-fusion",
       "--no-masked-softmax-fusion", "--no-bias-swiglu-fusion", "--no-rope-fusion", "--no-persist-layer-norm",
       "--use-cpu-initialization", "--attention-backend", "unfused", "--save-interval", "1000",
       "--no-save-optim", "--no-save-rng"]
FIXTURES = {
    "torch_dist": dict(tp=2, pp=1, extra=["--untie-embeddings-and-output-weights", "--rotary-base", "500000",
                                          "--norm-epsilon", "1e-5", "--ckpt-format", "torch_dist"]),
    "legacy": dict(tp=2, pp=2, extra=["--add-qkv-bias", "--rotary-base", "20000", "--norm-epsilon", "1e-6",
                                      "--ckpt-format", "torch"]),
}


def torchrun(nproc: int, argv, env) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-6000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")


def write_fixture(name: str, megatron_lm: Path, out: Path) -> None:
    spec = FIXTURES[name]
    where = out / name
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    tokens = torch.randint(0, VOCAB, TOKENS_SHAPE, generator=torch.Generator().manual_seed(0))
    torch.save(tokens, where / "tokens.pt")
    args = [*MODEL, *RUN, "--tensor-model-parallel-size", str(spec["tp"]),
            "--pipeline-model-parallel-size", str(spec["pp"]), *spec["extra"], "--save", str(where / "save")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    torchrun(spec["tp"] * spec["pp"], [str(ROOT / "tools" / "megatron_lm_cpu.py"), "--megatron-lm", str(megatron_lm),
                                       "--tokens", str(where / "tokens.pt"), "--logits", str(where / "logits.pt"),
                                       "--vocab", str(VOCAB), "--save-iteration", "10", "--", *args], env)
    (where / "command.json").write_text(json.dumps({"nproc": spec["tp"] * spec["pp"],
                                                    "megatron_lm_args": [a for a in args if a != str(where / "save")]},
                                                   indent=1) + "\n")
    print(f"wrote {where}")


def plain_common(src: Path, dst: Path) -> None:
    """``src``'s common state with its args reduced to plain values (enums by name) for an older Megatron-Core."""
    import argparse
    import enum

    import megatron.core  # noqa: F401  (its safe globals: the args hold its enums)

    def plain(v):
        if isinstance(v, enum.Enum):
            return v.name
        if isinstance(v, (str, int, float, bool, type(None), torch.dtype)):
            return v
        if isinstance(v, (list, tuple)):
            return type(v)(plain(x) for x in v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return str(v)

    common = torch.load(src, weights_only=True)
    common["args"] = argparse.Namespace(**{k: plain(v) for k, v in vars(common["args"]).items()})
    torch.save(common, dst)


def write_zarr(out: Path, pythonpath: str) -> None:
    source, where = out / "torch_dist", out / "zarr"
    if not (source / "save" / "iter_0000010").is_dir():
        raise SystemExit("the zarr fixture is written from the torch_dist one: write that first")
    shutil.rmtree(where, ignore_errors=True)
    (where / "save").mkdir(parents=True)
    plain_common(source / "save" / "iter_0000010" / "common.pt", where / "common_plain.pt")
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tools" / "megatron_core_zarr_writer.py"), str(source / "save" / "iter_0000010"),
           str(where / "common_plain.pt"), str(where / "save" / "iter_0000010")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (where / "common_plain.pt").unlink()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    (where / "save" / "latest_checkpointed_iteration.txt").write_text("10")
    for name in ("tokens.pt", "logits.pt"):
        shutil.copy2(source / name, where / name)
    (where / "command.json").write_text(json.dumps({"written_by": proc.stdout.strip().splitlines()[0],
                                                    "from": "torch_dist"}, indent=1) + "\n")
    print(f"wrote {where}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megatron-lm", required=True, type=Path, help="checkout of Megatron-LM core_v0.16.1")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--only", choices=sorted(FIXTURES) + ["zarr"], action="append", help="write only these fixtures")
    p.add_argument("--zarr-pythonpath", help="PYTHONPATH with an older megatron.core (zarr strategy) and zarr 2.x "
                                             "first: writes the zarr fixture")
    opts = p.parse_args(argv)
    if not (opts.megatron_lm / "megatron" / "training" / "checkpointing.py").is_file():
        p.error(f"{opts.megatron_lm} is not a Megatron-LM checkout (no megatron/training/checkpointing.py)")
    for name in opts.only or sorted(FIXTURES):
        if name != "zarr":
            write_fixture(name, opts.megatron_lm.resolve(), opts.out)
    if opts.zarr_pythonpath and (not opts.only or "zarr" in opts.only):
        write_zarr(opts.out, opts.zarr_pythonpath)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
