#!/usr/bin/env bash
# The GPU benchmark split into processes, so that a CUDA fault in one case (a dead context
# poisons every later kernel of its process) leaves the others measured. Each case writes
# $OUT/<case>/gpu.json; run from the repository root on the GPU machine.
set -u
OUT=${OUT:-bench/results/gpu-cases}
case_run() {  # name timeout env... -- phases
  local name=$1 limit=$2; shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "=== $name (${envs[*]:-default env}) ==="
  timeout "$limit" env "${envs[@]}" python3 -m bench.gpu --out "$OUT/$name" \
    --budget $((limit - 20)) --phases "$1" 2>&1 | grep -v "should be kept in float32"
  echo "=== $name: exit ${PIPESTATUS[0]}"
}
case_run bare-ckpt 70 -- bare-512
case_run bare-nockpt 60 -- bare-512-nockpt
case_run train-blocking 100 CUDA_LAUNCH_BLOCKING=1 -- train-512
case_run full-no-lt 300 DISABLE_ADDMM_CUDA_LT=1 -- \
  encode,train-512,train-1024,generate-1024,generate-512,compile-1024
