"""analysis.report: the HTML report (and the text summary) of a trace's metrics,
on synthetic traces with known numbers (tests.helpers.traces).
"""
from __future__ import annotations

import os
import re

from click.testing import CliRunner

from aios_lab.analysis.metrics import trace_metrics
from aios_lab.analysis.report import render_report, write_report
from aios_lab.cli import main
from aios_lab.telemetry.writer import TraceWriter

from tests.helpers.traces import S, metrics_trace


def test_report_shows_the_numbers(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t"))
    out = write_report(m, tmp_path / "r.html")
    doc = out.read_text()
    assert doc.startswith("<!DOCTYPE html>\n")        # no warning on a complete trace
    for text in ("500 us", "900 us", "990 us", "999 us", "1 ms", "500 us",  # p50..max
                 "task200", "6.12.0-test", "stress --cpu 4", "62.5 %"):
        assert text in doc, text
    assert '<td class="l">p99</td><td>990 us</td>' in doc
    assert '<td class="l">p99.9</td><td>999 us</td>' in doc
    # Self-contained: figures inline, nothing fetched.
    assert doc.count("data:image/png;base64,") >= 5
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", doc)
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


def test_truncated_trace_report_says_so_first(tmp_path):
    m = trace_metrics(metrics_trace(tmp_path / "t", status="truncated"))
    doc = render_report(m)
    first = doc.splitlines()[0]
    assert "TRUNCATED TRACE" in first
    body = doc[doc.index("<body>"):]
    assert body.index("TRUNCATED TRACE") < body.index("<h1>")
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "t")])
    assert res.exit_code == 0 and res.output.splitlines()[0].startswith("TRUNCATED TRACE")


def test_html_escapes_names(tmp_path):
    out = tmp_path / "t"
    w = TraceWriter(out, {})
    w.append("task_intervals", [{"interval_start_ns": 0, "interval_end_ns": S, "pid": 1, "tgid": 1,
                                 "comm": "<script>x", "wait_ns": 5, "wait_count": 1}])
    w.close()
    doc = render_report(trace_metrics(out))
    assert "<script>x" not in doc and "&lt;script&gt;x" in doc


def test_empty_and_proc_only_traces_render(tmp_path):
    w = TraceWriter(tmp_path / "t", {})
    w.close()
    m = trace_metrics(tmp_path / "t")
    assert m["wait"]["count"] == 0 and m["migrations"]["total"] == 0 and m["duration_s"] is None
    assert "No waits recorded" in render_report(m)
