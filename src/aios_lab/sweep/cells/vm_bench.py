"""vm-bench: boot the pinned sched_ext kernel and run one `bench-schedulers`
configuration (one scheduler, one workload, one run) with a telemetry trace.

The guest writes its JSON and trace into the cell's folder (a writable 9p
share); the trace lands at `trace/`, so `aios-lab sweep compare` (and
`aios-lab compare`) read the whole sweep. The cell records the kernel the
guest booted, the QEMU binary and the accelerator (beside the host and git
revision every cell records).

A node that runs these cells needs the project installed and built
(`make build`: libbpf, the pinned kernel, the BPF objects) and QEMU.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import CellError
from . import CellKind, Param, register

PINNED = "pinned"


def pinned_release() -> str:
    from ...vm.kernel import KernelPin

    return KernelPin.load().release


@register
class VmBench(CellKind):
    name = "vm-bench"
    summary = "one bench-schedulers run (a scheduler on a workload) in a fresh boot of the pinned kernel"
    layout = ("policy", "workload", "kernel")
    preload = ("aios_lab.vm.runner",)
    params = {
        "policy": Param(None, str, "a scheduler as bench-schedulers names it: eevdf, fifo, mllb-model ..."),
        "workload": Param(None, str, "a workload under workloads/"),
        "kernel": Param(PINNED, str, "the guest kernel release; the pinned one (vm/kernel.json)"),
        "cpus": Param(4, int, "vCPUs of the VM"),
        "numa": Param(2, int, "NUMA nodes of the VM"),
        "memory_mb": Param(2048, int, "guest memory"),
        # Single-threaded TCG runs every vCPU on one host thread, so one VM
        # needs one host core; under KVM give the vCPU count.
        "host_cpus": Param(1, int, "host cores one VM occupies (1 under TCG; its vCPUs under KVM)"),
        "timeout_s": Param(3600.0, float, "seconds for boot plus run"),
    }

    @classmethod
    def validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        p = super().validate(params)
        # The folder says which kernel ran: name the release, not "pinned".
        if p["kernel"] == PINNED:
            p["kernel"] = pinned_release()
        return p

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        from ... import workloads
        from ...bench.spec import SchedSpec
        from ...vm.topology import Topology

        release = pinned_release()
        if p["kernel"] not in (PINNED, release):
            raise CellError(f"vm-bench: kernel {p['kernel']} is not the pinned one ({release})",
                            hint="the VM boots only the pinned kernel: change vm/kernel.json to sweep another")
        workloads.get(p["workload"])
        SchedSpec.parse(p["policy"])
        Topology(cpus=p["cpus"], numa_nodes=p["numa"], memory_mb=p["memory_mb"])
        if p["host_cpus"] < 1:
            raise CellError("vm-bench: host_cpus must be >= 1")

    @classmethod
    def resources(cls, p: dict[str, Any]) -> dict[str, float]:
        return {"num_cpus": p["host_cpus"], "memory": p["memory_mb"] * 2 ** 20}

    def run(self, p: dict[str, Any], rep: int, out: Path) -> dict[str, Any]:
        from ...vm import runner
        from ...vm.topology import Topology

        guest_json, traces = out / "bench.json", out / ".traces"
        cmd = [sys.executable, "-m", "aios_lab.cli", "bench-schedulers", "--workload", p["workload"],
               "--policies", p["policy"], "--repeat", "1", "--json-out", str(guest_json),
               "--trace-dir", str(traces), "--model-out", str(out / "model")]
        topo = Topology(cpus=p["cpus"], numa_nodes=p["numa"], memory_mb=p["memory_mb"])
        with open(out / "guest.log", "w") as log:
            res = runner.run(cmd, topology=topo, rwdirs=[out], stream=log, timeout_s=p["timeout_s"])
        self._vm = res.describe()
        (out / "vm.json").write_text(json.dumps(self._vm, indent=2) + "\n")
        if res.returncode != 0:
            raise CellError(f"vm-bench: bench-schedulers failed in the guest (exit {res.returncode}); "
                            "see guest.log in the cell's staging folder")
        bench = json.loads(guest_json.read_text())
        made = sorted(traces.iterdir()) if traces.is_dir() else []
        if len(made) == 1:
            made[0].rename(out / "trace")
        shutil.rmtree(traces, ignore_errors=True)
        run = bench["runs"][0]
        return {"makespan_s": run["makespan_s"], "migrations": run.get("migrate"),
                "switches": run.get("switch"), "bpf_cost": run.get("bpf_cost"),
                "policy_stats": run.get("policy_stats"), "guest_kernel": bench.get("kernel"),
                "trace": "trace" if (out / "trace").is_dir() else None}

    def provenance(self, p: dict[str, Any], out: Path) -> dict[str, Any]:
        from ...vm.accel import find_qemu, qemu_version

        vm = getattr(self, "_vm", {})
        return {"kernel": (vm.get("kernel") or {}), "accel": vm.get("accel"),
                "qemu": qemu_version(find_qemu()), "topology": vm.get("topology")}
