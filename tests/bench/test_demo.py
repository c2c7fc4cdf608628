"""The demo's host side: the topology it asks for, and the comparison report
it ends with (the boot itself is `make demo`)."""
from __future__ import annotations

import os

import pytest

from aios_lab.bench.demo import demo_topology, write_comparison_report
from aios_lab.errors import AiosError

from tests.helpers.traces import metrics_trace


def test_the_default_topology_never_exceeds_the_hosts_cpus():
    cpus, numa = demo_topology()
    assert cpus == min(4, os.cpu_count() or 1) and numa == (2 if cpus == 4 else 1)
    # two NUMA nodes only for an even count of 4 or more vCPUs; asked-for values stay
    assert [demo_topology(n) for n in (1, 2, 3, 4, 6)] == [(1, 1), (2, 1), (3, 1), (4, 2), (6, 2)]
    assert demo_topology(4, 1) == (4, 1) and demo_topology(None, 1)[1] == 1


def test_experiment_comparison_report(tmp_path):
    """What `make demo` ends with: one group per scheduler, EEVDF the baseline."""
    runs = []
    for r, sched in enumerate(["fifo", "eevdf", "fifo", "eevdf"]):
        t = metrics_trace(tmp_path / f"build-{sched}-{r}", duration_s=10 + (sched == "fifo"))
        runs.append({"scheduler": sched, "trace": str(t)})
    lines: list[str] = []
    out = write_comparison_report({"runs": runs}, tmp_path / "report.html", lines.append)
    assert out.is_file() and "baseline: eevdf" in lines[0]
    doc = out.read_text()
    assert "eevdf (n=2)" in doc and "fifo (n=2)" in doc and "x1.100" in doc
    with pytest.raises(AiosError, match="fewer than two"):
        write_comparison_report({"runs": runs[1::2]}, tmp_path / "r2.html")
