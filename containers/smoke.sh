#!/usr/bin/env bash
# Smoke test, run inside the megatron-octo image on a GPU node:
#   srun --nodes=1 --gpus-per-node=2 --container-image=IMAGE bash /opt/megatron-octo/containers/smoke.sh
# 1. imports and versions (torch with CUDA, Transformer Engine, apex, Megatron-Core, vLLM, megatron_octo) and the
#    agreement of Megatron-Core and vLLM with the pins of megatron_octo/version.py;
# 2. whether Transformer Engine can run FP8 (and MXFP8) on the GPU at hand;
# 3. with two or more GPUs: a 10-step TP=2 training run of the tiny recipe in bf16 on Transformer Engine layers.
# Exit status 0 when every check that applies passes; the first failure ends the script.
set -euo pipefail

WORK="$(mktemp -d "${TMPDIR:-/tmp}/octo-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "== imports and versions"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device: run this on a GPU node (srun --gpus-per-node=...)"
import apex  # noqa: F401  (the NGC image's build)
import megatron.core
import transformer_engine
import transformer_engine.pytorch  # noqa: F401
import vllm
import megatron_octo
from megatron_octo import version

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0)}, sm_{''.join(map(str, torch.cuda.get_device_capability(0)))})")
print(f"transformer-engine {transformer_engine.__version__} | megatron-core {megatron.core.__version__} | "
      f"vllm {vllm.__version__} | megatron-octo {megatron_octo.__version__}")
for name, found, pinned in (("megatron-core", megatron.core.__version__, version.MEGATRON_CORE_CONTAINER),
                            ("vllm", vllm.__version__.split("+")[0], version.VLLM_CONTAINER)):
    assert found == pinned, f"{name} {found} in the image, but megatron_octo/version.py pins {pinned}: rebuild"
PY

echo "== Transformer Engine FP8 on this GPU"
python - <<'PY'
import torch
import transformer_engine.pytorch as te

def support(name):  # TE's own verdict: (available, reason); the module moved between releases
    for module in ("transformer_engine.pytorch.fp8", "transformer_engine.pytorch.quantization"):
        try:
            check = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        return check()
    return None, f"{name} not found in this Transformer Engine"

ok, reason = support("check_fp8_support")
print(f"FP8 (Hopper and later): {'available' if ok else 'not available: ' + str(reason)}")
ok_mx, reason_mx = support("check_mxfp8_support")
print(f"MXFP8 (Blackwell): {'available' if ok_mx else 'not available: ' + str(reason_mx)}")
if ok:  # the verdict is only useful if an FP8 GEMM really runs
    layer = te.Linear(256, 256, params_dtype=torch.bfloat16).cuda()
    with te.fp8_autocast(enabled=True):
        out = layer(torch.randn(32, 256, device="cuda", dtype=torch.bfloat16))
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all(), "an FP8 te.Linear gave non-finite outputs"
    print("FP8 te.Linear forward and backward: ok")
PY

GPUS="$(python -c 'import torch; print(torch.cuda.device_count())')"
if [ "$GPUS" -lt 2 ]; then
    echo "== TP=2 training run: skipped (1 GPU here; run with --gpus-per-node=2 for it)"
    echo "smoke: OK"
    exit 0
fi

echo "== TP=2 training run on 2 of $GPUS GPUs (tiny recipe, bf16, Transformer Engine layers)"
OMP_NUM_THREADS=2 python -m torch.distributed.run --standalone --nproc-per-node=2 -m megatron_octo train \
    --recipe tiny-cpu --run-dir "$WORK/tp2" parallel.tp=2 train.iters=10 precision.dtype=bf16 model.spec=te \
    logging.tensorboard=false
python - "$WORK/tp2/metrics.jsonl" <<'PY'
import json, math, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
assert len(rows) == 10, f"expected 10 steps in metrics.jsonl, found {len(rows)}"
assert all(math.isfinite(r["loss"]) for r in rows), "a loss was not finite"
assert rows[-1]["loss"] < rows[0]["loss"], f"the loss did not fall: {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}"
print(f"loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f} over 10 steps at TP=2")
PY
echo "smoke: OK"
