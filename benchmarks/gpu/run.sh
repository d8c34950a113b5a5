#!/usr/bin/env bash
# Everything measured on a GPU in one go (about 8 minutes), from the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu/run.sh
#
# Needs only torch and triton (plus the test dependencies for step 2): nothing is installed.
# mosaic_encoder and mosaic_kernels are made importable by linking the source folders into a
# temporary directory on PYTHONPATH (kernels/ is the package mosaic_kernels). Every step is
# time-boxed and appends to $OUT/gpu-log.txt, so a step that overruns still leaves the earlier
# results; result files go to $OUT/benchmarks/gpu/ (copy them into the repository's
# benchmarks/gpu/). TRITON_PRINT_AUTOTUNING=1 puts each kernel's chosen config into the log.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/mosaic-gpu}
RESULTS="$OUT/benchmarks/gpu"
LOG="$OUT/gpu-log.txt"
mkdir -p "$RESULTS"
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
ln -s "$REPO/mosaic_encoder" "$SITE/mosaic_encoder"
ln -s "$REPO/kernels" "$SITE/mosaic_kernels"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_PRINT_AUTOTUNING=1
cd "$REPO"

step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2; shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%T)" >>"$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "=== $name: rc=$? $(date -u +%T)" >>"$LOG"
}
BENCH=(python3 -m mosaic_encoder.bench)  # an array: timeout runs commands, not shell functions

# 1. environment
step 60 environment bash -c 'nvidia-smi; python3 -c "import sys, torch, triton; \
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
\"triton\", triton.__version__, \"gpu\", torch.cuda.get_device_name())"'

# 2. the CUDA tests (first calls compile)
step ${T_TESTS:-120} cuda-tests python3 -m pytest -q -p no:cacheprovider -k cuda tests

# 3. attention: ours against compiled FlexAttention (ALiBi score_mod, document mask) and dense
#    SDPA; bf16 and fp16, head_dim 64 and 128, forward and forward+backward.
ATTN=(--device cuda --impls ours-triton,flex,sdpa-dense --dtypes bfloat16,float16
      --heads 12 --head-dims 64,128 --modes fwd,fwd+bwd)
#    1 x 4096 and 1 x 16384
step ${T_ATTN_SINGLE:-150} attention-single "${BENCH[@]}" attention "${ATTN[@]}" \
    --compositions single --lengths 4096,16384 --out "$RESULTS/attention-single.json"
#    4 x 4096 and a mixed batch (longest 4096, 16384 tokens)
step ${T_ATTN_BATCH:-120} attention-batches "${BENCH[@]}" attention "${ATTN[@]}" \
    --compositions equal,mixed --lengths 4096 --batch-tokens 16384 \
    --out "$RESULTS/attention-batches.json"

# 4. the whole model against the dense baseline: 512 tokens and a mixed corpus
step ${T_MODEL:-90} model "${BENCH[@]}" model --device cuda --dtype bfloat16 --lengths 512 \
    --corpus-docs 256 --corpus-max-len 4096 --out "$RESULTS/model.json"

shopt -s nullglob
written=("$RESULTS"/*.json)
[ ${#written[@]} -gt 0 ] && step 30 report "${BENCH[@]}" report "${written[@]}"
echo "=== done $(date -u +%T)" >>"$LOG"
