#!/usr/bin/env python
"""Peak memory and wall time of ``octo convert`` against loading the whole state dict with transformers.

A synthetic Hugging Face checkpoint with the exact shape of a preset (default: Llama-3.2-3B, bf16, random weights,
two safetensors shards as on the Hub) is written to disk first, tensor by tensor. Then, each in a fresh child
process (so each peak is its own, read from the kernel's high-water mark ``ru_maxrss``):

- convert HF -> Megatron-Core (``--tp 2 --pp 2``), streaming;
- convert Megatron-Core -> HF, streaming;
- baseline: ``AutoModelForCausalLM.from_pretrained`` and one read of every tensor of its ``state_dict()`` (a sum),
  i.e. the whole state dict in memory: the least a converter that loads the model with transformers must do.
  (transformers 5 maps the safetensors files and loads lazily; without the read the weights would not be resident
  at all, and a converter reads every one of them.)

    python benchmarks/convert_memory.py                         # Llama-3.2-3B shape, about 20 GB of scratch disk
    python benchmarks/convert_memory.py --preset tiny-llama     # seconds; what the test suite runs

Prints one line per run and a Markdown table (peak RSS, wall time, MB/s, peak as a share of the baseline's), and
exits 1 when the streaming conversions' peak is not under ``--target`` (default 25%) of the baseline's. The HF ->
Megatron-Core -> HF round trip is checked for bit identity on a sample of tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from megatron_octo.convert import hf_io  # noqa: E402
from megatron_octo.convert.layout import build_plan, row_blocks  # noqa: E402
from megatron_octo.models import llama, qwen2  # noqa: E402

PRESETS = {**llama.PRESETS, **qwen2.PRESETS}
_DTYPES = {"bf16": (torch.bfloat16, "bfloat16"), "fp32": (torch.float32, "float32")}
# Child process: run the statement, then print the peak RSS (KiB on Linux) and the wall time of the statement.
_CHILD = """
import resource, sys, time, json
sys.path.insert(0, {repo!r})
{setup}
t0 = time.perf_counter()
{stmt}
wall = time.perf_counter() - t0
print("RESULT " + json.dumps({{"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "wall_s": wall}}))
"""


def write_synthetic_hf(out: Path, preset: str, dtype: str, max_shard: int = 5 * 10**9, seed: int = 0) -> int:
    """An HF model directory with ``preset``'s config.json and random weights (normal, std 0.02), written in row
    blocks so this process never holds a whole tensor; returns the bytes of weights."""
    torch_dtype, name = _DTYPES[dtype]
    family = llama if preset in llama.PRESETS else qwen2
    cfg = family.from_hf(PRESETS[preset])
    out.mkdir(parents=True)
    (out / hf_io.CONFIG).write_text(json.dumps(family.to_hf(cfg, dtype=name), indent=2) + "\n")
    tensors = [hf_io.OutTensor(t.name, t.shape, torch_dtype) for t in build_plan(cfg).hf_tensors()]
    shards = hf_io.plan_shards(tensors, max_shard)
    gen = torch.Generator().manual_seed(seed)
    for file, group in shards:
        writer = hf_io.SafetensorsWriter(out / file, group)
        for t in group:
            for a, b in row_blocks(t.shape[0], t.nbytes // t.shape[0], 64 << 20):
                block = torch.empty((b - a, *t.shape[1:]), dtype=torch.float32).normal_(0.0, 0.02, generator=gen)
                writer.write(t.name, block.to(torch_dtype))
        writer.close()
    hf_io.write_index(out, shards)
    return sum(t.nbytes for t in tensors)


def measure(setup: str, stmt: str, label: str) -> Dict[str, float]:
    """Run ``stmt`` in a fresh Python process; its peak RSS (bytes) and wall time (s), setup excluded from time."""
    code = _CHILD.format(repo=str(Path(__file__).resolve().parents[1]), setup=setup, stmt=stmt)
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    return {"peak_bytes": result["peak_kib"] * 1024, "wall_s": result["wall_s"]}


def runs(hf_dir: Path, work: Path) -> List[tuple]:
    """(label, setup, statement) of each measured run."""
    conv = "from megatron_octo.convert import hf_to_mcore, mcore_to_hf"
    return [
        ("convert hf -> mcore (tp 2, pp 2)", conv,
         f"hf_to_mcore({str(hf_dir)!r}, {str(work / 'mcore')!r}, tp=2, pp=2, quiet=True)"),
        ("convert mcore -> hf", conv, f"mcore_to_hf({str(work / 'mcore')!r}, {str(work / 'hf-back')!r}, quiet=True)"),
        ("baseline: transformers from_pretrained, state_dict() read once",
         "import torch\nfrom transformers import AutoModelForCausalLM",
         f"sd = AutoModelForCausalLM.from_pretrained({str(hf_dir)!r}, dtype='auto').state_dict()\n"
         "checksum = sum(float(t.sum()) for t in sd.values())"),
    ]


def check_round_trip(a: Path, b: Path, names: List[str]) -> bool:
    """The named tensors of two HF directories are bit-identical (read lazily)."""
    x, y = hf_io.HFCheckpoint(a), hf_io.HFCheckpoint(b)
    return all(torch.equal(x.read_rows(n, 0, x.tensors[n].shape[0]), y.read_rows(n, 0, y.tensors[n].shape[0]))
               for n in names)


def table(results: Dict[str, Dict[str, float]], weight_bytes: int) -> str:
    base = results[next(k for k in results if k.startswith("baseline"))]["peak_bytes"]
    rows = ["| run | peak RSS | wall | throughput | peak / baseline |", "|---|---:|---:|---:|---:|"]
    for label, r in results.items():
        rows.append(f"| {label} | {r['peak_bytes'] / 2**30:.2f} GiB | {r['wall_s']:.1f} s | "
                    f"{weight_bytes / 2**20 / r['wall_s']:.0f} MiB/s | {100 * r['peak_bytes'] / base:.1f}% |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama-3.2-3b", choices=sorted(PRESETS), help="model shape")
    p.add_argument("--dtype", default="bf16", choices=sorted(_DTYPES), help="weights dtype (default: bf16)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one, removed after)")
    p.add_argument("--target", type=float, default=0.25, help="largest peak RSS / baseline peak (default: 0.25)")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    try:
        return _run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path) -> int:
    hf_dir = work / "hf"
    t0 = time.perf_counter()
    if (hf_dir / hf_io.CONFIG).is_file():  # a --workdir kept from an earlier run
        weight_bytes = sum(f.stat().st_size for f in hf_dir.glob("*.safetensors"))
        print(f"reusing the synthetic checkpoint in {hf_dir}", flush=True)
    else:
        weight_bytes = write_synthetic_hf(hf_dir, args.preset, args.dtype)
        print(f"synthetic {args.preset} ({args.dtype}): {weight_bytes / 2**30:.2f} GiB of weights written in "
              f"{time.perf_counter() - t0:.0f} s to {hf_dir}", flush=True)
    for stale in ("mcore", "hf-back"):
        shutil.rmtree(work / stale, ignore_errors=True)
    results = {}
    for label, setup, stmt in runs(hf_dir, work):
        results[label] = measure(setup, stmt, label)
        print(f"{label}: peak RSS {results[label]['peak_bytes'] / 2**30:.2f} GiB, "
              f"{results[label]['wall_s']:.1f} s", flush=True)
    names = [t.name for t in build_plan(llama.from_hf(PRESETS[args.preset]) if args.preset in llama.PRESETS
                                        else qwen2.from_hf(PRESETS[args.preset])).hf_tensors()][::7]
    identical = check_round_trip(hf_dir, work / "hf-back", names)
    print(f"\n{args.preset} shape, {args.dtype}, {weight_bytes / 2**30:.2f} GiB of weights; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}\n")
    print(table(results, weight_bytes))
    base = results[next(k for k in results if k.startswith("baseline"))]["peak_bytes"]
    worst = max(r["peak_bytes"] for k, r in results.items() if not k.startswith("baseline"))
    print(f"\nround trip bit-identical on {len(names)} sampled tensors: {identical}; streaming peak / baseline peak "
          f"= {100 * worst / base:.1f}% (target < {100 * args.target:.0f}%)")
    return 0 if identical and worst < args.target * base else 1


if __name__ == "__main__":
    raise SystemExit(main())
