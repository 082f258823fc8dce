#!/usr/bin/env bash
# One prepared GPU check: at most 8 minutes on one H100/H200 with CUDA torch, transformers and safetensors but no
# Transformer Engine, no vLLM and no network. It measures, side by side in one run, writing its figures to $OUT:
#   1. the measured bf16 matmul peak (8192^3 products);
#   2. `octo train` on the 1B shape (Llama-3.2-1B, all 16 layers), bf16, synthetic tokens: tokens/s and model
#      TFLOP/s from our metrics.jsonl;
#   3. the plain PyTorch reference of the same shape and batch geometry: transformers LlamaForCausalLM with SDPA
#      and fused AdamW, (a) fp32 master weights with bf16 autocast, (b) pure bf16;
#   4. HF -> Megatron-Core -> HF round trip of a random 1B-shaped checkpoint (4 layers) with --verify (the
#      Megatron-Core side runs on the GPU), then every tensor compared bit for bit.
# Goals (issue 13): ours >= 1.3x the better reference in tokens/s; ours >= 45% of the measured peak.
#
# Usage
#   bash benchmarks/gpu_check.sh --fetch-wheels .whl   # HERE, with the package registry: the pure-Python wheels
#                                                      # the GPU machine lacks (megatron-core, omegaconf), cp312
#   OUT=DIR bash benchmarks/gpu_check.sh [--wheels .whl]   # on the GPU machine, offline; the default --wheels is
#                                                      # .whl in the repository root when it exists
#   OUT=DIR bash benchmarks/gpu_check.sh --cpu-smoke   # the same steps at toy size on CPU (tests/benchmarks run it)
# Environment: PYTHON (default python3), WORK (scratch, default a new temp dir; checkpoints never go to $OUT),
# GPU_CHECK_STEPS (default 20; 8 with --cpu-smoke), GPU_CHECK_BUDGET (seconds for the whole run: 480; 1200 smoke).
# Output in $OUT (at most 8 files): summary.md, summary.json, log.txt, metrics.jsonl (octo train's).
# Exit status: 0 when every step ran (goals are reported, not enforced), 1 when a step failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
MODE=gpu
WHEELS=""
FETCH=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu-smoke) MODE=cpu; shift ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
        --fetch-wheels) FETCH="${2:?--fetch-wheels needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo pipefail/{/^set/d;s/^# \{0,1\}//;p;}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

# Megatron-Core and OmegaConf for CPython 3.12 on x86-64 Linux (the GPU image's Python); both need only what the
# image has (numpy, packaging, torch, PyYAML). Versions: megatron_octo/version.py and setup.py.
WHEEL_PINS=(megatron-core==0.16.1 omegaconf==2.4.0)

if [[ -n "$FETCH" ]]; then
    mkdir -p "$FETCH"
    exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$FETCH" "${WHEEL_PINS[@]}"
fi

if [[ -z "${OUT:-}" ]]; then
    echo "gpu_check: set OUT to the folder for the figures (e.g. OUT=/tmp/gpu_check)" >&2
    exit 2
fi
mkdir -p "$OUT"
WORK="${WORK:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$WORK"
LOG="$OUT/log.txt"
# The whole run's time budget: 8 minutes on the GPU machine (issue 13); the smoke run on a shared CPU gets more.
if [[ "$MODE" == gpu ]]; then BUDGET="${GPU_CHECK_BUDGET:-480}"; else BUDGET="${GPU_CHECK_BUDGET:-1200}"; fi
RESERVE=20
: > "$LOG"
FAILED=()

say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# run NAME SECONDS CMD...: one step under a time limit, cut to what is left of the whole run's budget (BUDGET
# seconds from the start, less RESERVE for the summary); its output goes to the log; a failure is recorded, not
# fatal.
run() {
    local name="$1" limit="$2"
    shift 2
    local left=$(( BUDGET - RESERVE - SECONDS ))
    if (( left < limit )); then limit=$left; fi
    if (( limit < 5 )); then
        FAILED+=("$name")
        say "step $name SKIPPED: the ${BUDGET}s budget is spent"
        return 0
    fi
    say "step $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        FAILED+=("$name")
        say "step $name FAILED (exit $rc after $((SECONDS - start))s)"
    else
        say "step $name done in $((SECONDS - start))s"
    fi
    return 0
}

# --- the environment: carried wheels, offline ------------------------------------------------------------------
if [[ -z "$WHEELS" && -d "$REPO/.whl" && "$MODE" == gpu ]]; then
    WHEELS="$REPO/.whl"
fi
if [[ -n "$WHEELS" ]]; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if [[ ${#wheels[@]} -eq 0 ]]; then
        echo "gpu_check: no wheels in $WHEELS: run 'bash benchmarks/gpu_check.sh --fetch-wheels $WHEELS' first" >&2
        exit 2
    fi
    say "installing ${#wheels[@]} carried wheels into $WORK/site (offline)"
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
            "${wheels[@]}" >> "$LOG" 2>&1; then
        say "installing the wheels failed (see above)"
        exit 1
    fi
    export PYTHONPATH="$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
# Megatron-Core's tensor-parallel communication ordering (as the launcher sets it); harmless on one GPU.
export CUDA_DEVICE_MAX_CONNECTIONS=1

if ! "$PYTHON" -c "import megatron.core, omegaconf, transformers, safetensors" >> "$LOG" 2>&1; then
    say "megatron-core / omegaconf / transformers / safetensors do not import: carry the wheels (--fetch-wheels)"
    exit 1
fi
FACTS="$("$PYTHON" - <<'EOF'
import json, torch
import megatron.core, transformers
from megatron_octo.training.precision import detect_hardware
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
hw = detect_hardware(dev)
print(json.dumps({"device": hw.name or "CPU", "capability": list(hw.capability), "torch": torch.__version__,
                  "megatron_core": megatron.core.__version__, "transformers": transformers.__version__,
                  "transformer_engine": hw.te_version, "cuda": dev.type == "cuda"}))
EOF
)"
say "environment: $FACTS"
if [[ "$MODE" == gpu && "$FACTS" != *'"cuda": true'* ]]; then
    say "no CUDA device visible: run on the GPU machine, or use --cpu-smoke"
    exit 1
fi

# --- sizes ----------------------------------------------------------------------------------------------------
if [[ "$MODE" == gpu ]]; then
    RECIPE=octothinker-1b-stable
    STEPS="${GPU_CHECK_STEPS:-20}"
    WARMUP=3
    SHAPE=(train.global_batch=8 train.micro_batch=1 train.seq_len=4096)
    PEAK=(--size 8192 --repeats 10)
    RT_LAYERS=4
    LIMITS=(60 150 110 110 150)   # peak, octo train, reference amp, reference bf16, round trip; all within BUDGET
else
    RECIPE=tiny-cpu
    STEPS="${GPU_CHECK_STEPS:-8}"
    WARMUP=2
    SHAPE=(train.global_batch=8 train.micro_batch=2 train.seq_len=64)
    PEAK=(--size 256 --repeats 5)
    RT_LAYERS=2
    LIMITS=(60 400 200 200 450)
fi
RUN_OVERRIDES=("${SHAPE[@]}" data.kind=synthetic data.mixture=null "train.iters=$STEPS" train.tokens=null
               precision.fp8=null checkpoint.save=false checkpoint.load=null checkpoint.branch_from=null
               logging.tensorboard=false)
HELPER=("$PYTHON" "$REPO/benchmarks/gpu_check.py")

# --- 1. matmul peak ------------------------------------------------------------------------------------------------
run peak "${LIMITS[0]}" "${HELPER[@]}" peak "${PEAK[@]}" --out "$WORK/peak.json"

# --- 2. octo train ------------------------------------------------------------------------------------------------
rm -rf "$WORK/train"
run octo_train "${LIMITS[1]}" "$PYTHON" -m megatron_octo train --recipe "$RECIPE" --run-dir "$WORK/train" \
    "${RUN_OVERRIDES[@]}"
if [[ -f "$WORK/train/metrics.jsonl" ]]; then
    cp "$WORK/train/metrics.jsonl" "$OUT/metrics.jsonl"
    run ours_figures 60 "${HELPER[@]}" ours --recipe "$RECIPE" --run-dir "$WORK/train" --warmup "$WARMUP" \
        --out "$WORK/ours.json" "${RUN_OVERRIDES[@]}"
fi

# --- 3. the PyTorch reference, two precisions ---------------------------------------------------------------------
run reference_amp "${LIMITS[2]}" "${HELPER[@]}" reference --mode amp --recipe "$RECIPE" --steps "$STEPS" \
    --warmup "$WARMUP" --out "$WORK/ref_amp.json" "${RUN_OVERRIDES[@]}"
run reference_bf16 "${LIMITS[3]}" "${HELPER[@]}" reference --mode bf16 --recipe "$RECIPE" --steps "$STEPS" \
    --warmup "$WARMUP" --out "$WORK/ref_bf16.json" "${RUN_OVERRIDES[@]}"

# --- 4. HF -> Megatron-Core -> HF with --verify, then bit-for-bit ------------------------------------------------
rm -rf "$WORK/rt"
RT_LIMIT=$(( LIMITS[4] / 3 ))
run rt_make_hf "$RT_LIMIT" "${HELPER[@]}" make-hf --recipe "$RECIPE" --layers "$RT_LAYERS" --dir "$WORK/rt/hf" \
    --out "$WORK/rt/make_hf.json" "${RUN_OVERRIDES[@]}"
# Each --verify prints one "verify (...): ... OK|FAILED" line into the log; the helper keeps the step's last one.
run rt_to_mcore "$RT_LIMIT" "$PYTHON" -m megatron_octo convert --from hf --to mcore --input "$WORK/rt/hf" \
    --output "$WORK/rt/mcore" --verify
"${HELPER[@]}" verify-line --log "$LOG" --expect "hf vs mcore" --out "$WORK/roundtrip_to_mcore.json" > /dev/null
run rt_to_hf "$RT_LIMIT" "$PYTHON" -m megatron_octo convert --from mcore --to hf --input "$WORK/rt/mcore" \
    --output "$WORK/rt/hf2" --verify
"${HELPER[@]}" verify-line --log "$LOG" --expect "mcore vs hf" --out "$WORK/roundtrip_to_hf.json" > /dev/null
run rt_compare 60 "${HELPER[@]}" compare-hf "$WORK/rt/hf" "$WORK/rt/hf2" --out "$WORK/roundtrip_compare.json" \
    --require-identical

# --- summary --------------------------------------------------------------------------------------------------
"${HELPER[@]}" summarize --work "$WORK" --out-dir "$OUT" --facts "$FACTS" --recipe "$RECIPE" --steps "$STEPS" \
    --warmup "$WARMUP" --mode "$MODE" "${RUN_OVERRIDES[@]}" | tee -a "$LOG"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    say "failed steps: ${FAILED[*]} (log: $LOG)"
    exit 1
fi
say "all steps ran in ${SECONDS}s; figures in $OUT/summary.md"
