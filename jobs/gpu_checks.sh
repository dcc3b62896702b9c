#!/usr/bin/env bash
# The GPU checks in one script, for a machine with an NVIDIA GPU (run from the repository root):
#   bash jobs/gpu_checks.sh OUT_DIR
# 1. jobs/bench_gpu.py: student bf16 training throughput and MFU (small, base; two batch sizes), the student's
#    cost against length on the device, a torch.profiler breakdown of base at batch 64, teacher inference.
# 2. The adapter tests of the brain-signal teachers (braindecode), which need a torchaudio built for the
#    installed torch: GPU images usually have the matching pair (see README, "EEG teachers").
# Needs torch with CUDA, transformers and step-dist's own dependencies importable (PYTHONPATH may point at them).
set -uo pipefail
OUT="${1:-bench_results}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
       AWS_EC2_METADATA_DISABLED=true
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
rc=0
python3 jobs/bench_gpu.py --out "$OUT" --profile base:64 ${BENCH_GPU_ARGS:-} 2>&1 | grep -v "it/s\]" | tee "$OUT/bench_gpu.log" || rc=1
if python3 -c "import braindecode" 2>/dev/null; then
  # without moto (the S3 test server) the S3 half of the tests cannot run; the local-folder half still does
  sel=$(python3 -c "import moto" 2>/dev/null && echo "" || echo "not s3")
  python3 -m pytest -q -ra -p no:cacheprovider tests/test_teachers_braindecode.py ${sel:+-k "$sel"} 2>&1 \
    | tee "$OUT/test_braindecode.log" || rc=1
else
  echo "braindecode is not installed: its adapter tests were not run" | tee "$OUT/test_braindecode.log"
fi
exit $rc
