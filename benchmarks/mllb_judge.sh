#!/bin/sh
# Learned load balancing judged on the QEMU 10 multi-threaded TCG platform
# (issue 16): in ONE boot, the placement control, then the build workload under
# EEVDF, fifo, mllb-collect, mllb-model (trained here first) and the
# never-migrate control mllb-stay, interleaved, traced; then the wakeup-latency
# workload and hackbench under the same schedulers and the same model.
#
# usage: sh benchmarks/mllb_judge.sh OUTDIR [CPUS NODES REPEAT]
#   e.g. sh benchmarks/mllb_judge.sh results/judge-2x1 2 1 5
# QEMU runs under SCHED_RR (--rt) so that other work on the host moves the
# guest less; the placement control in each bench says whether it did.
set -eu
out=${1:?usage: mllb_judge.sh OUTDIR [CPUS NODES REPEAT]}
cpus=${2:-2}; nodes=${3:-1}; repeat=${4:-5}
pols=eevdf,fifo,mllb-collect,mllb-model,mllb-stay
mkdir -p "$out"
out=$(cd "$out" && pwd)
.venv/bin/aios-lab vm run --rt --cpus "$cpus" --numa "$nodes" --timeout 14400 --rwdir "$out" -- sh -c "
  aios-lab bench-schedulers --workload build --policies $pols --repeat $repeat \
    --trace-dir $out/build --model-out $out/mllb-build.model --json-out $out/build.json &&
  aios-lab bench-schedulers --workload wakeup --policies $pols --repeat $repeat \
    --trace-dir $out/wakeup --model $out/mllb-build.model --json-out $out/wakeup.json &&
  aios-lab bench-schedulers --workload hackbench --policies $pols --repeat $repeat \
    --trace-dir $out/hackbench --model $out/mllb-build.model --json-out $out/hackbench.json"
