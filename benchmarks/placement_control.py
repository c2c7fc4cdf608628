#!/usr/bin/env python3
"""How well each VM platform can reward a good placement: the placement
control (bench.control: N CPU-bound spinners all pinned to one vCPU vs free
under EEVDF) in one boot per (TCG mode, topology). A ratio near the vCPU
count means placement changes a makespan; near 1, it cannot.

Usage: .venv/bin/python benchmarks/placement_control.py [--repeat 3] [--nice -10]
         [--modes multi,single] [--topologies 2x1,4x2] [--out results/placement_control.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aios_lab.vm import runner
from aios_lab.vm.qemu import TcgMode
from aios_lab.vm.topology import Topology


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loops", type=int, default=None)
    ap.add_argument("--nice", type=int, default=None)
    ap.add_argument("--rt", action="store_true", help="QEMU under SCHED_RR (see vm.runner)")
    ap.add_argument("--modes", default="multi,single")
    ap.add_argument("--topologies", default="2x1,4x2")
    ap.add_argument("--out", type=Path, default=Path("results/placement_control.json"))
    a = ap.parse_args()
    rows = []
    for mode in a.modes.split(","):
        for spec in a.topologies.split(","):
            cpus, nodes = (int(x) for x in spec.split("x"))
            cmd = [sys.executable, "-m", "aios_lab.bench.control", "--repeat", str(a.repeat)]
            if a.loops:
                cmd += ["--loops", str(a.loops)]
            res = runner.run(cmd, topology=Topology(cpus=cpus, numa_nodes=nodes), timeout_s=1800,
                             tcg=TcgMode(mode), nice=a.nice, realtime=a.rt)
            if res.returncode != 0:
                print(res.output[-2000:])
                return 1
            got = json.loads(res.output.strip().splitlines()[-1])
            got.update(tcg=res.tcg, accel=res.accel, qemu=res.qemu["version"], topology=spec, nice=a.nice, rt=a.rt)
            rows.append(got)
            print(f"{res.accel} {res.tcg or '-':6} {spec}: pinned {got['pinned_s']} free {got['free_s']} "
                  f"ratio x{got['ratio']:.2f} (ideal x{got['ideal_ratio']}) judged={got['judged']}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=2))
    print("\n| TCG | vCPUs / nodes | pinned s | free s | ratio | judges load balancing |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tcg']} | {r['topology']} | {', '.join(f'{x:.2f}' for x in r['pinned_s'])} | "
              f"{', '.join(f'{x:.2f}' for x in r['free_s'])} | x{r['ratio']:.2f} | {'yes' if r['judged'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
