#!/usr/bin/env python3
"""VM figures for benchmarks/RESULTS.md: boot-to-command time, fifo attach
time, and workload makespan under EEVDF vs fifo in one VM run.

Usage: .venv/bin/python benchmarks/vm_bench.py [--repeat 3] [--out results/vm_bench.json]
Prints a table; every ratio compares runs made in the same boot.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from aios_lab.bench.summary import format_summary
from aios_lab.vm import runner
from aios_lab.vm.topology import Topology


def boot_times(cpus: int, numa: int, n: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(n):
        res = runner.run("true", topology=Topology(cpus=cpus, numa_nodes=numa), timeout_s=600)
        assert res.returncode == 0
        out.append((res.boot_to_command_s, res.launch_to_command_s, res.wall_s))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/vm_bench.json"))
    args = ap.parse_args()
    report: dict = {"boot": {}}
    for cpus, numa in ((2, 1), (4, 2)):
        times = boot_times(cpus, numa, args.boots)
        report["boot"][f"{cpus}cpu"] = times
        b, lc, w = ([t[i] for t in times] for i in range(3))
        print(f"{cpus} vCPUs ({numa} NUMA node(s)): kernel boot to command (guest uptime) median "
              f"{statistics.median(b):.1f}s [{min(b):.1f}-{max(b):.1f}]; QEMU launch to command (host) median "
              f"{statistics.median(lc):.1f}s; whole `vm run true` median {statistics.median(w):.1f}s", flush=True)
    out_dir = Path(tempfile.mkdtemp(prefix="aios-bench-", dir=args.out.parent.resolve()
                                    if args.out.parent.exists() else None))
    jsons = {w: out_dir / f"{w}.json" for w in ("cpu-spin", "hackbench")}
    cmd = " && ".join(
        f"{sys.executable} -m aios_lab.cli bench-schedulers --workload {w} --policies eevdf,fifo "
        f"--repeat {args.repeat} --json-out {p}" for w, p in jsons.items())
    res = runner.run(cmd, topology=Topology(cpus=4, numa_nodes=2), rwdirs=[out_dir], timeout_s=3600,
                     stream=sys.stdout)
    if res.returncode != 0:
        print(f"bench failed in the guest (exit {res.returncode})", file=sys.stderr)
        return 1
    report["vm"] = res.describe()
    for w, p in jsons.items():
        result = json.loads(p.read_text())
        report[w] = result
        print()
        print(format_summary(result, report["vm"]))
        attach = [r["attach_s"] for r in result["runs"] if r["attach_s"]]
        load = [r["load_s"] for r in result["runs"] if r.get("load_s")]
        if load:
            print(f"fifo open+load (libbpf, verifier): median {statistics.median(load) * 1000:.0f} ms "
                  f"[{min(load) * 1000:.0f}-{max(load) * 1000:.0f}]")
        if attach:
            print(f"fifo attach (link create -> state enabled): median {statistics.median(attach) * 1000:.0f} ms "
                  f"[{min(attach) * 1000:.0f}-{max(attach) * 1000:.0f}] over {len(attach)} attaches")
        p.unlink()
    out_dir.rmdir()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
