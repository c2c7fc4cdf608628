#!/usr/bin/env python3
"""Stability of sched_ext attach/detach on the VM platform: --cycles rounds of
every policy (fifo, mllb collect, mllb model, freq) under hackbench, once per
topology (2 vCPUs / 1 node and 4 vCPUs / 2 nodes), in one boot each. Any guest
oops or panic (the runner scans the console), hang (timeout), ejection or
state left enabled is a failure.

Usage: .venv/bin/python benchmarks/stability.py [--cycles 50] [--tcg multi|single] [--out results/stability.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from aios_lab.errors import GuestHang, GuestPanic
from aios_lab.vm import runner
from aios_lab.vm.qemu import TcgMode
from aios_lab.vm.topology import Topology


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--tcg", choices=["multi", "single"], default=None)
    ap.add_argument("--rt", action="store_true", help="QEMU under SCHED_RR (see vm.runner)")
    ap.add_argument("--topologies", default="2x1,4x2", help="CPUSxNODES, comma-separated")
    ap.add_argument("--out", type=Path, default=Path("results/stability.json"))
    a = ap.parse_args()
    report, bad = {}, 0
    for spec in a.topologies.split(","):
        cpus, nodes = (int(x) for x in spec.split("x"))
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
            out = Path(d) / "cycles.json"
            cmd = [sys.executable, "-m", "aios_lab.bench.stability", "--cycles", str(a.cycles),
                   "--hold", str(a.hold), "--json-out", str(out)]
            try:
                res = runner.run(cmd, topology=Topology(cpus=cpus, numa_nodes=nodes), rwdirs=[Path(d)],
                                 timeout_s=600 + a.cycles * 60, stream=sys.stdout,
                                 tcg=TcgMode(a.tcg) if a.tcg else None, realtime=a.rt)
                got = json.loads(out.read_text()) if out.exists() else {"failures": [f"exit {res.returncode}"]}
                got.update(vm={"qemu": res.qemu["version"], "tcg": res.tcg, "accel": res.accel,
                               "kernel": res.kernel["release"], "oopses": len(res.report.oopses),
                               "warnings": len(res.report.warnings)})
            except (GuestPanic, GuestHang) as exc:
                got = {"failures": [f"{type(exc).__name__}: {exc}"]}
        report[spec] = got
        bad += len(got.get("failures", []))
        print(f"\n{spec}: {got.get('cycles')} total {got.get('total')} failures {len(got.get('failures', []))} "
              f"in {got.get('seconds')} s; {got.get('vm')}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'ALL CLEAN' if not bad else f'{bad} FAILURES'}; written to {a.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
