#!/usr/bin/env bash
# The GPU proof of issue 14, as one short script for a machine with an NVIDIA GPU:
#
#   1. inference slices/s of ANU-Net L1..L4 at 256x256 in bf16 on the fast path
#      (target on an H200: >= 6,000 slices/s at L4; the paper did 308/s), against this GPU's
#      own bf16 matmul rate measured in the same run;
#   2. a 1-worker NCCL TorchTrainer for a few steps in bf16 (jobs/train.py --use-gpu) on a small
#      synthetic dataset at 256 px, registered per depth;
#   3. the segment job with --use-gpu on a synthetic archive, with the model from step 2;
#   4. one summary: PASS/FAIL/SKIP per step and the measured numbers.
#
# Run from the repository root after `make install TORCH_SPEC=torch` (CUDA PyTorch; the
# project's dependencies, Ray and MLflow among them). Where the project's dependencies are
# missing (a bare image with only PyTorch), steps 2 and 3 are SKIPPED and say why; step 1
# needs PyTorch alone. Everything goes to a throwaway folder ($GPU_CHECK_WORK, default a
# mktemp folder). Takes about 5 minutes on an H200.
#
#     bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter
set -uo pipefail

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WORK="${GPU_CHECK_WORK:-$(mktemp -d -t anunet-gpu-check-XXXX)}"
export PYTHONPATH="$PWD:$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" RAY_ADDRESS=""
declare -A RESULT
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

log "python: $PYTHON; work folder: $WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || log "nvidia-smi not found"

# 1. inference -----------------------------------------------------------------------------------
log "1/3 inference L1..L4 at 256x256, bf16, fast path"
if "$PYTHON" - <<'EOF' | tee "$WORK/inference.txt"; then RESULT[inference]=PASS; else RESULT[inference]=FAIL; fi
import time, torch
from anunet_core import ANUNet, optimize_for_inference
assert torch.cuda.is_available(), "PyTorch sees no CUDA device"
device = torch.device("cuda")
a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
for _ in range(3):
    a @ a
torch.cuda.synchronize(); start = time.perf_counter()
for _ in range(10):
    a @ a
torch.cuda.synchronize(); peak = 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
print(f"GPU: {torch.cuda.get_device_name()}; bf16 matmul {peak:.0f} TFLOP/s (8192^3, this run)")
torch.manual_seed(0)
model = ANUNet().eval()
from anunet_core.anytime import depth_gflops
gflops = depth_gflops(model, 256, 256)
batch = 256
x = torch.rand(batch, 1, 256, 256, device=device)
for depth in (1, 2, 3, 4):
    net = optimize_for_inference(model, depth).to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            net(x)
        torch.cuda.synchronize(); start = time.perf_counter(); rounds = 10
        for _ in range(rounds):
            torch.sigmoid(net(x)[-1].float())
        torch.cuda.synchronize()
    rate = rounds * batch / (time.perf_counter() - start)
    achieved = rate * gflops[depth] / 1e3
    print(f"L{depth}: {rate:8.0f} slices/s  {gflops[depth]:6.1f} GFLOP/slice  {achieved:6.1f} TFLOP/s = "
          f"{achieved / peak:.0%} of the matmul rate" + ("   (target >= 6000 slices/s)" if depth == 4 else ""))
EOF

# 2. training -------------------------------------------------------------------------------------
if ! "$PYTHON" -c "import ray, mlflow, nibabel" 2>/dev/null; then
    RESULT[train]="SKIP (Ray, MLflow or nibabel missing: make install TORCH_SPEC=torch first)"
    RESULT[segment]="SKIP (as above)"
else
    log "2/3 a 1-worker NCCL TorchTrainer, bf16, 256 px"
    if "$PYTHON" jobs/make_synthetic.py --out "$WORK/archive" --cases 6 --modality CT --format nifti --seed 3 \
        && "$PYTHON" jobs/ingest.py --source "$WORK/archive" --out "$WORK/data" --organ liver --modality CT --size 256 \
        && "$PYTHON" jobs/train.py --data "$WORK/data" --use-gpu --num-workers 1 --epochs 1 --batch-size 16 \
               --storage-path "$WORK/ray_results" --register 2>&1 | tee "$WORK/train.log" | tail -n 5; then
        RESULT[train]=PASS
    else
        RESULT[train]="FAIL (see $WORK/train.log)"
    fi

    # 3. segmentation ------------------------------------------------------------------------------
    log "3/3 the segment job with --use-gpu"
    if [[ "${RESULT[train]}" == PASS ]] \
        && "$PYTHON" jobs/make_synthetic.py --out "$WORK/nightly" --cases 8 --modality CT --format nifti --seed 5 \
        && "$PYTHON" jobs/segment.py --archive "$WORK/nightly" --out "$WORK/out" --model anunet-liver-ct --depth 4 \
               --use-gpu 2>&1 | tee "$WORK/segment.log" | tail -n 3; then
        RESULT[segment]="PASS ($("$PYTHON" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s['ok']} ok, {s['failed']} failed, {s['slices_per_second']:.0f} slices/s\")" "$WORK/out/summary.json"))"
    else
        RESULT[segment]="FAIL (see $WORK/segment.log)"
    fi
fi

echo
echo "=== GPU check summary ==="
echo "inference: ${RESULT[inference]}"
sed 's/^/    /' "$WORK/inference.txt" 2>/dev/null
echo "NCCL TorchTrainer, bf16: ${RESULT[train]}"
echo "segment --use-gpu: ${RESULT[segment]}"
[[ "${RESULT[inference]}" == PASS && "${RESULT[train]}" != FAIL* && "${RESULT[segment]}" != FAIL* ]]
