#!/bin/sh
# Record the DVFS traces that `aios-lab train freq` and benchmarks/dvfs_bench.py
# replay: three kinds of demand, one run per seed (seeds 1-3 by default;
# SEEDS="4 5" records more). Seed 3 is held out, the others train. Needs
# root (BPF telemetry); runs on the host, whose kernel needs no sched_ext for
# this. Every trace keeps the whole switch stream (--stream-budget 0: no
# window sampled out), from which dvfs.activation cuts one item per
# activation (a wakeup's run until the task sleeps); workloads/dvfs/traces
# holds the older recordings, per-interval time only.
# Usage: [SEEDS="1 2 3"] sh benchmarks/dvfs_record.sh [OUTDIR] [SECONDS]
set -eu
out=${1:-workloads/dvfs/traces-switches}
secs=${2:-20}
aios=${AIOS:-.venv/bin/aios-lab}
mkdir -p "$out"
sh workloads/build/run.sh gen >/dev/null
for seed in ${SEEDS:-1 2 3}; do
  "$aios" collect --interval 0.01 --no-wakeups --stream-budget 0 --out "$out/bursty-$seed" -- \
      python3 workloads/dvfs/bursty.py --seed "$seed" --duration "$secs" >/dev/null
  "$aios" collect --interval 0.01 --no-wakeups --stream-budget 0 --out "$out/frames-$seed" -- \
      python3 workloads/dvfs/frames.py --seed "$seed" --duration "$secs" >/dev/null
  # throughput: the build workload; its runs differ only by the machine's noise
  "$aios" collect --interval 0.01 --no-wakeups --stream-budget 0 --duration "$secs" --out "$out/build-$seed" -- \
      sh workloads/build/run.sh build >/dev/null
done
du -sh "$out"/*
