#!/usr/bin/env python3
"""What the per-task state costs the sweep's sampling, before and after (SIMULATED).

The sweep (dvfs.sweep.sample) replays every training trace at every fixed
OPP and reads the state every 1 ms step; over the per-task state
(dvfs.task_signal) that means summing every queued item's tasks'
estimates, and at a low OPP the queue holds hundreds of items. This times,
in one run and OPP by OPP with the two arms interleaved (their order
alternating), the sampling with
* `by-item`: TaskSignals.queued_by_item, the definition (a Python sum per
  item and task, every step: the code before issue 22's fourth session), and
* `cached`: TaskSignals.queued, the queued items' estimates gathered with
  numpy from the demand's precomputed task rows (Demand.item_tasks) when
  they change, and summed in the same order;
and checks that the two sample exactly the same steps, energy, misses and
overdue time per (OPP, bucket), so the table the sweep chooses is the same.
The (utilisation, queue) state's sampling is timed too, as the floor.
CPU seconds (process time) are what to compare on a shared host; wall
seconds are printed beside them.

    nice -n 19 .venv/bin/python benchmarks/dvfs_task_state.py --hold-out-run 3 --validate-run 2
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from aios_lab.dvfs import experiment as ex
from aios_lab.dvfs.platform import load_cluster
from aios_lab.dvfs.sweep import sample
from aios_lab.dvfs.task_signal import TaskSignals
from aios_lab.errors import ModelError


class ByItem(TaskSignals):
    """The per-task signal with queued() as its item-by-item definition."""

    def queued(self) -> list[float]:
        return self.queued_by_item()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", default="gs101:big")
    ap.add_argument("--hold-out-run", type=int, default=ex.TEST_RUN)
    ap.add_argument("--validate-run", type=int, default=None, help="also take this run out of training")
    ap.add_argument("--opps", type=_ints, default=None, help="OPP indices to sample (default: all)")
    a = ap.parse_args()
    cl = load_cluster(a.cluster)
    try:
        train_p, _ = ex.split(a.hold_out_run)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skip = {f"{k}-{a.validate_run}" for k in ex.KINDS}
    train = [d for d in ex.load_demands(train_p) if d.name not in skip]
    opps = a.opps if a.opps is not None else list(range(cl.nr_opps))
    if not all(0 <= o < cl.nr_opps for o in opps):
        print(f"error: --opps must be OPP indices in 0..{cl.nr_opps - 1}", file=sys.stderr)
        return 2
    print(ex.SIMULATED)
    print(f"sampling {len(train)} traces {[d.name for d in train]} at {len(opps)} OPPs, per-task state")
    arms = {"by-item": dict(state="task", signals=ByItem), "cached": dict(state="task"),
            "util-queue": dict(state="util-queue")}
    cpu = {k: 0.0 for k in arms}
    wall = {k: 0.0 for k in arms}
    same = True
    print(f"{'OPP':>3} {'MHz':>5} " + " ".join(f"{k + ' CPU s':>16}" for k in arms) + f" {'speedup':>8} same")
    for i, o in enumerate(opps):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        got, row = {}, {}
        for k in order:
            w0, c0 = time.perf_counter(), time.process_time()
            got[k] = sample(cl, train, opps=[o], **arms[k])
            row[k] = time.process_time() - c0
            cpu[k] += row[k]
            wall[k] += time.perf_counter() - w0
        a_, b_ = got["by-item"], got["cached"]
        eq = all(np.array_equal(getattr(a_, f), getattr(b_, f)) for f in ("steps", "energy", "misses", "overdue"))
        same &= eq
        print(f"{o:3d} {cl.freqs_khz[o] // 1000:5d} " + " ".join(f"{row[k]:16.2f}" for k in arms)
              + f" {row['by-item'] / max(row['cached'], 1e-9):7.1f}x {'yes' if eq else 'NO'}", flush=True)
    print("\nall OPPs  [SIMULATED figures; times from a shared host]")
    for k in arms:
        print(f"{k:10} {cpu[k]:8.1f} s CPU  {wall[k]:8.1f} s wall")
    print(f"per-task state, by-item / cached: x{cpu['by-item'] / max(cpu['cached'], 1e-9):.1f} CPU; "
          f"cached / util-queue: x{cpu['cached'] / max(cpu['util-queue'], 1e-9):.2f} CPU")
    print(f"samples identical (steps, energy, misses, overdue per OPP and bucket): {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
