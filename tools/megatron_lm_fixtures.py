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
at TP=2 x PP=2: tied embeddings, QKV biases, uneven RoPE base). The ``zarr`` one needs an older Megatron-Core:
``--zarr-python`` names the interpreter of a venv holding megatron-core 0.7 (see ``write_zarr``).
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megatron-lm", required=True, type=Path, help="checkout of Megatron-LM core_v0.16.1")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--only", choices=sorted(FIXTURES), action="append", help="write only these fixtures")
    opts = p.parse_args(argv)
    if not (opts.megatron_lm / "megatron" / "training" / "checkpointing.py").is_file():
        p.error(f"{opts.megatron_lm} is not a Megatron-LM checkout (no megatron/training/checkpointing.py)")
    for name in opts.only or sorted(FIXTURES):
        write_fixture(name, opts.megatron_lm.resolve(), opts.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
