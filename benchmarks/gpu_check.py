"""The Python steps of ``benchmarks/gpu_check.sh`` (one subcommand each; the shell script runs them in order).

    peak        measured dense matmul peak (bf16 on GPU; fp32 on CPU for the smoke run)
    reference   plain PyTorch reference training of the recipe's shape: transformers LlamaForCausalLM with SDPA,
                fused AdamW, either fp32 master weights under bf16 autocast (``--mode amp``) or pure bf16
                (``--mode bf16``); the same batch geometry, synthetic tokens, clipping and step timing as ours
    ours        tokens/s and model TFLOP/s of an ``octo train`` run, from its metrics.jsonl
    make-hf     a random Hugging Face checkpoint of the recipe's shape (optionally fewer layers) for the round trip
    compare-hf  two HF checkpoints tensor by tensor, bit for bit
    summarize   every step's JSON -> summary.json and summary.md (side by side, ratios, the issue's goals)

Every subcommand writes one JSON file (``--out``); the figures are the benchmark's, never hard-coded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Goals of issue 13 part 4 on one H100/H200 without TE.
GOAL_RATIO = 1.3
GOAL_PEAK_SHARE = 0.45


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _write(path: str, data: Dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(data, sort_keys=True), flush=True)


def _recipe(name: str, overrides: List[str]):
    from megatron_octo.config import load_recipe

    return load_recipe(name, list(overrides))


# --------------------------------------------------------------------------------------------------------------------
# peak
# --------------------------------------------------------------------------------------------------------------------


def cmd_peak(args) -> None:
    """Mean TFLOP/s of ``repeats`` n x n x n products after 3 warm-ups, on random data (zeros run faster)."""
    device = _device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = args.size
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.repeats):
        a @ b
    _sync(device)
    seconds = (time.perf_counter() - start) / args.repeats
    _write(args.out, {"device": _device_name(device), "dtype": str(dtype).replace("torch.", ""), "size": n,
                      "repeats": args.repeats, "tflops": 2 * n ** 3 / seconds / 1e12})


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------------------------------


def _hf_model(recipe, dtype: torch.dtype, device: torch.device):
    from transformers import AutoConfig, AutoModelForCausalLM

    from megatron_octo.models import get_family

    hf = get_family(recipe.model.family).to_hf(recipe.model)
    config = AutoConfig.for_model(**hf)
    torch.manual_seed(recipe.train.seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(device)


def _adamw(params, recipe, device: torch.device):
    o, s = recipe.optimizer, recipe.schedule
    kwargs = dict(lr=s.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    try:  # fused on CUDA (and on CPU where this torch has the kernel)
        return torch.optim.AdamW(params, fused=True, **kwargs), True
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, foreach=True, **kwargs), False


def cmd_reference(args) -> None:
    """tokens/s of the plain PyTorch loop; ``amp``: fp32 weights and optimizer, bf16 autocast; ``bf16``: all bf16."""
    from megatron_octo.data.synthetic import SyntheticTokens
    from megatron_octo.training.flops import flops_per_token

    recipe = _recipe(args.recipe, args.overrides)
    device = _device()
    t = recipe.train
    model = _hf_model(recipe, torch.float32 if args.mode == "amp" else torch.bfloat16, device)
    model.train()
    opt, fused = _adamw(model.parameters(), recipe, device)
    data = SyntheticTokens(recipe.model.vocab_size, t.seq_len, t.seed)
    accum = t.global_batch // t.micro_batch
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.mode == "amp")
    times, losses = [], []
    for step in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        total = 0.0
        for k in range(accum):
            first = step * t.global_batch + k * t.micro_batch
            batch = torch.stack([data[first + i] for i in range(t.micro_batch)]).to(device)  # [b, s + 1]
            with autocast:
                logits = model(input_ids=batch[:, :-1]).logits  # [b, s, v]
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()) / accum
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optimizer.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
        losses.append(total)
    timed = times[args.warmup:]
    tps = len(timed) * t.global_batch * t.seq_len / sum(timed)
    memory = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    _write(args.out, {
        "mode": args.mode, "fused_adamw": fused, "attention": "sdpa", "device": _device_name(device),
        "steps": args.steps, "warmup": args.warmup, "tokens_per_s": tps,
        "tflops": tps * flops_per_token(recipe.model, t.seq_len) / 1e12, "first_loss": losses[0],
        "last_loss": losses[-1], "max_memory_gib": memory,
    })


# --------------------------------------------------------------------------------------------------------------------
# ours (octo train's metrics)
# --------------------------------------------------------------------------------------------------------------------


def cmd_ours(args) -> None:
    """Our figures from the run's metrics.jsonl: tokens/s over the steps after the warm-up, model TFLOP/s per GPU."""
    from megatron_octo.training.flops import flops_per_token

    recipe = _recipe(args.recipe, args.overrides)
    records = [json.loads(line) for line in (Path(args.run_dir) / "metrics.jsonl").read_text().splitlines()]
    timed = records[args.warmup:]
    if not timed:
        raise SystemExit(f"gpu_check: {args.run_dir}/metrics.jsonl has {len(records)} steps, none after the warm-up")
    tokens = recipe.train.global_batch * recipe.train.seq_len * len(timed)
    tps = tokens / sum(r["step_time_s"] for r in timed)
    from_metrics = [r["model_tflops"] for r in timed if "model_tflops" in r]
    _write(args.out, {
        "steps": len(records), "warmup": args.warmup, "tokens_per_s": tps,
        # per GPU; the metrics' own field where the run wrote it, else the same formula here
        "tflops": (sum(from_metrics) / len(from_metrics) if from_metrics
                   else tps * flops_per_token(recipe.model, recipe.train.seq_len) / args.gpus / 1e12),
        "tflops_source": "metrics.jsonl model_tflops" if from_metrics else "flops.flops_per_token",
        "first_loss": records[0]["loss"], "last_loss": records[-1]["loss"],
        "mfu_metrics": timed[-1].get("mfu"),
    })


# --------------------------------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------------------------------


def cmd_make_hf(args) -> None:
    """A randomly initialized HF checkpoint of the recipe's model (``--layers`` to cut it), saved in bf16."""
    import dataclasses

    from transformers import AutoConfig, AutoModelForCausalLM

    from megatron_octo.models import get_family

    recipe = _recipe(args.recipe, args.overrides)
    model_cfg = recipe.model if args.layers is None else dataclasses.replace(recipe.model, num_layers=args.layers)
    hf = get_family(model_cfg.family).to_hf(model_cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**hf), dtype=torch.bfloat16)
    model.save_pretrained(args.dir)
    _write(args.out, {"dir": args.dir, "layers": model_cfg.num_layers,
                      "parameters": sum(p.numel() for p in model.parameters())})


def _tensors(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: Dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def cmd_compare_hf(args) -> None:
    """Every tensor of ``a`` and ``b`` equal in name, dtype, shape and bits."""
    a, b = _tensors(Path(args.a)), _tensors(Path(args.b))
    differ = [k for k in sorted(set(a) & set(b))
              if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    only = sorted(set(a) ^ set(b))
    identical = not differ and not only and bool(a)
    _write(args.out, {"tensors": len(a), "differ": differ[:20], "missing_or_extra": only[:20],
                      "bit_identical": identical})
    if args.require_identical and not identical:
        raise SystemExit(f"gpu_check: {args.a} and {args.b} differ: {(differ + only)[:5]}")


# --------------------------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------------------------


def _load(path: Path) -> Optional[Dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value, spec: str = ",.0f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def summarize(work: Path, meta: Dict) -> Dict:
    """One dict of every figure the steps wrote (missing steps are None) and the goals' verdicts."""
    peak, ours = _load(work / "peak.json"), _load(work / "ours.json")
    amp, bf16 = _load(work / "ref_amp.json"), _load(work / "ref_bf16.json")
    rt = {k: _load(work / f"{k}.json") for k in ("roundtrip_to_mcore", "roundtrip_to_hf", "roundtrip_compare")}
    refs = [r for r in (amp, bf16) if r]
    best = max(refs, key=lambda r: r["tokens_per_s"]) if refs else None
    ratio = ours["tokens_per_s"] / best["tokens_per_s"] if ours and best else None
    share = ours["tflops"] / peak["tflops"] if ours and peak else None
    return {
        **meta, "peak": peak, "ours": ours, "reference_amp": amp, "reference_bf16": bf16, "roundtrip": rt,
        "ratio_vs_best_reference": ratio, "ours_share_of_peak": share,
        "goal_ratio": GOAL_RATIO, "goal_peak_share": GOAL_PEAK_SHARE,
        "goal_ratio_met": None if ratio is None else ratio >= GOAL_RATIO,
        "goal_peak_share_met": None if share is None else share >= GOAL_PEAK_SHARE,
        "roundtrip_ok": bool(rt["roundtrip_compare"] and rt["roundtrip_compare"]["bit_identical"]),
    }


def markdown(s: Dict) -> str:
    peak = (s["peak"] or {}).get("tflops")
    rows = [("octo train (Megatron-Core)", s["ours"]), ("transformers, fp32 master + bf16 autocast",
                                                       s["reference_amp"]), ("transformers, pure bf16",
                                                                             s["reference_bf16"])]
    lines = [f"# GPU check: {s.get('device', '?')}", "",
             f"Shape: recipe `{s.get('recipe')}` with `{' '.join(s.get('overrides', []))}`; "
             f"{s.get('steps')} steps, {s.get('warmup')} untimed.", "",
             f"Measured {s['peak']['dtype'] if s['peak'] else ''} matmul peak: {_fmt(peak, '.4g')} TFLOP/s", "",
             "| run | tokens/s | model TFLOP/s | share of measured peak | first -> last loss |",
             "|---|---:|---:|---:|---|"]
    for label, r in rows:
        if r is None:
            lines.append(f"| {label} | failed or not run | | | |")
            continue
        share = r["tflops"] / peak if peak else None
        lines.append(f"| {label} | {_fmt(r['tokens_per_s'])} | {_fmt(r['tflops'], '.3g')} | "
                     f"{_fmt(None if share is None else 100 * share, '.1f')}% | "
                     f"{_fmt(r['first_loss'], '.3f')} -> {_fmt(r['last_loss'], '.3f')} |")
    ratio, share = s["ratio_vs_best_reference"], s["ours_share_of_peak"]
    lines += ["", f"- ours / best reference: {_fmt(ratio, '.2f')}x (goal >= {GOAL_RATIO}x: "
                  f"{_verdict(s['goal_ratio_met'])})",
              f"- ours / measured peak: {_fmt(None if share is None else 100 * share, '.1f')}% (goal >= "
              f"{100 * GOAL_PEAK_SHARE:.0f}%: {_verdict(s['goal_peak_share_met'])})"]
    rt = s["roundtrip"]
    for key, label in (("roundtrip_to_mcore", "HF -> Megatron-Core --verify"),
                       ("roundtrip_to_hf", "Megatron-Core -> HF --verify")):
        line = (rt[key] or {}).get("line") or "no verify line: the step failed or did not run"
        lines.append(f"- {label}: {line}")
    cmp = rt["roundtrip_compare"]
    lines.append(f"- HF -> Megatron-Core -> HF tensors bit-identical: "
                 f"{'yes' if s['roundtrip_ok'] else 'NO'}" + (f" ({cmp['tensors']} tensors)" if cmp else ""))
    return "\n".join(lines) + "\n"


def _verdict(met: Optional[bool]) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def cmd_summarize(args) -> None:
    meta = {**json.loads(args.facts), "recipe": args.recipe, "steps": args.steps, "warmup": args.warmup,
            "mode": args.mode, "overrides": list(args.overrides)}
    s = summarize(Path(args.work), meta)
    out = Path(args.out_dir)
    (out / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
    text = markdown(s)
    (out / "summary.md").write_text(text)
    print(text, flush=True)


def cmd_verify_line(args) -> None:
    """The ``verify (...): ... OK|FAILED`` line of an ``octo convert --verify`` log, as JSON."""
    lines = [ln for ln in Path(args.log).read_text().splitlines() if ln.startswith(f"verify ({args.expect},")]
    _write(args.out, {"line": lines[-1] if lines else None, "ok": bool(lines) and lines[-1].endswith(": OK")})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("peak")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", required=True)
    for name in ("reference", "ours", "make-hf"):
        p = sub.add_parser(name)
        p.add_argument("--recipe", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("overrides", nargs="*")
        if name == "reference":
            p.add_argument("--mode", choices=("amp", "bf16"), required=True)
            p.add_argument("--steps", type=int, required=True)
            p.add_argument("--warmup", type=int, required=True)
        if name == "ours":
            p.add_argument("--run-dir", required=True)
            p.add_argument("--warmup", type=int, required=True)
            p.add_argument("--gpus", type=int, default=1)
        if name == "make-hf":
            p.add_argument("--dir", required=True)
            p.add_argument("--layers", type=int, default=None)
    p = sub.add_parser("compare-hf")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--out", required=True)
    p.add_argument("--require-identical", action="store_true", help="exit 1 unless bit-identical")
    p = sub.add_parser("verify-line")
    p.add_argument("--log", required=True)
    p.add_argument("--expect", required=True, help="the compared sides, e.g. 'hf vs mcore'")
    p.add_argument("--out", required=True)
    p = sub.add_parser("summarize")
    p.add_argument("--work", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--facts", default="{}", help="JSON of the environment (device, versions)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    p.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    handlers = {"peak": cmd_peak, "reference": cmd_reference, "ours": cmd_ours, "make-hf": cmd_make_hf,
                "compare-hf": cmd_compare_hf, "verify-line": cmd_verify_line, "summarize": cmd_summarize}
    handlers[args.cmd](args)


if __name__ == "__main__":
    main()
