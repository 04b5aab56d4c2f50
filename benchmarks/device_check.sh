#!/usr/bin/env bash
# The one-shot GPU run: everything a GPU must measure for gankd, in one command of at most 8 minutes on an
# H100, into OUT_DIR. Run from the repository root on the GPU machine:
#
#     benchmarks/device_check.sh OUT_DIR [WHEELS_DIR]      (make device-check OUT=... WHEELS=...)
#
# It needs only torch and triton there (torch 2.11 / Triton 3.6 and newer); gankd runs from the checkout,
# without installing. WHEELS_DIR, if given, holds wheels to add without a network (liger-kernel for its
# softmax_kl comparison, matplotlib, pytest, ...): they go to a private folder on PYTHONPATH.
#
# Steps, each under its own time limit so that one slow step cannot eat the others' time:
#   1. the compiled kernel tests, all dtypes and the GPU-only large shapes  -> OUT_DIR/kernel_tests.xml,
#      and every relative error they record                                   -> OUT_DIR/kernel_errors.tsv
#   2. every kernel benchmark (gankd Triton, eager, torch.compile, Liger where it applies), each with the
#      device's copy bandwidth measured in the same run                      -> OUT_DIR/kernels.csv
#   3. the distillation training step, fused losses against the reference   -> OUT_DIR/train_step.csv
#   4. softmax_kl's launch-configuration sweep (benchmarks/tune_softmax_kl.py) -> OUT_DIR/tune_softmax_kl.csv
#   5. every GPU kernel of one call of each op, host and device time        -> OUT_DIR/profile_ops.csv
#   6. feature_match's launch-configuration sweep (tune_feature_match.py)   -> OUT_DIR/tune_feature_match.csv
# and a log of everything, OUT_DIR/device_check.log. Back on a development machine,
# `python -m benchmarks.ingest_device_results OUT_DIR` appends the rows to benchmarks/results/, redraws the
# figures and regenerates the README's tables. Without a CUDA device it says so and exits with status 2.
# A rerun of some steps: STEPS=kernel,softmax_kl (each step's first word) and TESTS=<pytest paths or node ids>.
set -uo pipefail

out=${1:?usage: benchmarks/device_check.sh OUT_DIR [WHEELS_DIR]}
wheels=${2:-}
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/device_check.log") 2>&1

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "device_check: no CUDA device is visible to $python (torch.cuda.is_available() is False): run it on a GPU machine"
    exit 2
fi

# gankd from the checkout: the packages as pyproject.toml maps them (kernels/ is gankd.kernels,
# configs/ is gankd.configs), linked into a private folder with benchmarks/, tests/ and pyproject.toml.
# The steps run from that folder: `python -m` and pytest's `pythonpath = ["."]` put the working
# directory first on sys.path, and in the repository root that is gankd/ without its kernels.
site=$(mktemp -d /tmp/gankd-device-XXXXXX)
mkdir -p "$site/gankd"
for entry in "$root"/gankd/*; do ln -s "$entry" "$site/gankd/"; done
ln -s "$root/kernels" "$site/gankd/kernels"
ln -s "$root/configs" "$site/gankd/configs"
for entry in benchmarks tests pyproject.toml; do ln -s "$root/$entry" "$site/$entry"; done
if [ -n "$wheels" ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site/wheels" "$wheels"/*.whl \
        || echo "device_check: some wheels in $wheels did not install; the steps that need them will say so"
    export PYTHONPATH="$site/wheels"
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$site"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c 'import torch, triton; p = torch.cuda.get_device_properties(0);
print(f"torch {torch.__version__}, triton {triton.__version__}, {p.name}, {p.multi_processor_count} SMs")'

failed=()
# STEPS picks steps by their first word (a rerun of some of them); TESTS narrows the kernel tests.
steps=",${STEPS:-kernel,softmax_kl,feature_match,adapted_feature_match,training,tune,profile,sweep},"
step() {  # step NAME SECONDS COMMAND...: run it under its limit, record a failure, go on
    local name=$1 limit=$2
    shift 2
    [[ $steps == *",${name%% *},"* ]] || return 0
    echo "=== $name (limit ${limit} s) ==="
    local started=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - started)) s ==="
    [ "$status" -eq 0 ] || failed+=("$name (exit $status)")
}

# Four pytest-xdist workers where it is installed: most of this step is compiling kernels, on the CPU cores.
# Four bound the GPU memory the large-shape tests hold at once (about 13 GB each at most).
workers=()
"$python" -c 'import xdist' 2>/dev/null && workers=(-n 4)
export GANKD_ERROR_LOG="$out/kernel_errors.tsv"  # each relative error a kernel test records: label, error
step "kernel tests" 150 "$python" -m pytest -q ${TESTS:-tests/kernels} --ignore=tests/kernels/test_compile_gate.py -p no:cacheprovider \
    "${workers[@]}" --junitxml="$out/kernel_tests.xml"
step "softmax_kl benchmark" 90 "$python" -m benchmarks.bench_softmax_kl --dtypes bf16,fp32 --out "$out/kernels.csv"
# fp16 gradients take the backward path (the logits read again): gankd's own time, next to bf16's above.
step "softmax_kl fp16 benchmark" 25 "$python" -m benchmarks.bench_softmax_kl --dtypes fp16 --providers gankd_triton \
    --out "$out/kernels.csv"
step "feature_match benchmark" 90 "$python" -m benchmarks.bench_feature_match --dtypes bf16,fp32,fp16 \
    --out "$out/kernels.csv"
step "adapted_feature_match benchmark" 50 "$python" -m benchmarks.bench_adapted_feature_match --dtypes bf16,fp32 \
    --out "$out/kernels.csv"
step "training step benchmark" 60 "$python" -m benchmarks.bench_train_step --out "$out/train_step.csv"
step "tune softmax_kl" 60 "$python" -m benchmarks.tune_softmax_kl --out "$out/tune_softmax_kl.csv"
step "profile ops" 50 "$python" -m benchmarks.profile_ops --out "$out/profile_ops.csv"
step "sweep feature_match" 45 "$python" -m benchmarks.tune_feature_match --out "$out/tune_feature_match.csv"

echo "=== summary ==="
for file in "$out"/*.csv; do [ -f "$file" ] && echo "$(basename "$file"): $(($(wc -l <"$file") - 1)) rows"; done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}"
    exit 1
fi
echo "all steps passed"
