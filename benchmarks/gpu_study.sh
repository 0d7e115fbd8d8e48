#!/usr/bin/env bash
# Issue 6's GPU figure, prepared for a device session (the device tool runs it in the repo root):
#
#   run: bash benchmarks/gpu_study.sh        (timeout_s 600; the log comes back in $OUT)
#
# The device image has JAX with CUDA, numpy, pandas, scipy and matplotlib; jaximpute runs from the
# working tree. It prints the device, then the whole example study (2 conditions x 1,000
# replications, five methods) with one batch per condition, timed from a cold start.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-study}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 -c "import jax; print(jax.devices(), jax.__version__)"
  python3 -m jaximpute.cli simulate configs/sim_slope.toml --memory -q
  python3 benchmarks/bench_study.py --batch 1000
} 2>&1 | tee "$OUT/gpu_study.log"
