"""Work-conservation loss over hand-made switch streams."""
import numpy as np
import pytest

from aios_lab.analysis.work_conservation import work_conservation_loss

NAN = float("nan")


def _loss(rows):
    a = np.array(rows, dtype=float).T
    return work_conservation_loss(a[0].astype(np.int64), a[1].astype(np.int64), a[2].astype(np.int64),
                                  a[3].astype(np.int64), a[4])


def test_an_idle_cpu_while_a_task_waits_on_the_other_is_lost_capacity():
    # ts, cpu, prev, next, next_wait. CPU 1 idles over [100, 900); on CPU 0
    # task 11 waits over [200, 600) (runs at 600, after task 10).
    rows = [(0, 0, 0, 10, NAN), (0, 1, 0, 12, NAN),
            (100, 1, 12, 0, NAN),
            (600, 0, 10, 11, 400),
            (900, 1, 0, 12, NAN),
            (1000, 0, 11, 10, NAN), (1000, 1, 12, 0, NAN)]
    out = _loss(rows)
    assert out["loss_s"] == pytest.approx(400e-9)
    assert out["span_s"] == pytest.approx(1000e-9) and out["cpus"] == 2
    assert out["fraction"] == pytest.approx(400 / 2000)


def test_no_idle_cpu_means_no_loss_however_long_the_waits():
    rows = [(0, 0, 0, 10, NAN), (0, 1, 0, 12, NAN),
            (500, 0, 10, 11, 500), (500, 1, 12, 13, 500),
            (1000, 0, 11, 10, 500), (1000, 1, 13, 12, 500)]
    assert _loss(rows)["loss_s"] == 0


def test_loss_counts_min_of_idle_cpus_and_waiting_tasks():
    # Two CPUs idle over [0, 1000) on a 3-CPU stream, three tasks waiting over
    # [0, 1000): only two could have run.
    rows = [(0, 0, 5, 0, NAN), (0, 1, 6, 0, NAN), (0, 2, 0, 7, NAN),
            (1000, 0, 0, 20, 1000), (1000, 1, 0, 21, 1000), (1000, 2, 7, 22, 1000)]
    assert _loss(rows)["loss_s"] == pytest.approx(2000e-9)


def test_empty_or_unknown_spans_give_none():
    assert _loss([(0, 0, 0, 1, NAN)])["loss_s"] is None
    e = work_conservation_loss(*(np.array([], dtype=np.int64),) * 4, np.array([]))
    assert e["loss_s"] is None


def test_a_written_trace_gives_the_loss_and_the_named_tasks_waits(tmp_path):
    """Through the real TraceWriter: the sleeper's waits alone are its latency."""
    from aios_lab.analysis.work_conservation import trace_placement
    from aios_lab.telemetry.writer import TraceWriter

    rows = []
    for ts, cpu, prev, nxt, comm, wait in [
            (0, 0, 0, 10, "wl-hog", None), (0, 1, 0, 12, "wl-hog", None),
            (100, 1, 12, 0, "swapper", None),
            (600, 0, 10, 11, "wl-sleeper", 400),
            (900, 1, 0, 12, "wl-hog", 800),
            (1000, 0, 11, 10, "wl-hog", 300), (1000, 1, 12, 0, "swapper", None)]:
        rows.append({"ts_ns": ts, "cpu": cpu, "prev_pid": prev, "next_pid": nxt, "next_comm": comm,
                     "next_wait_ns": wait})
    with TraceWriter(tmp_path / "t", {"collector": {"kind": "test"}}) as w:
        w.append("switches", rows)
    out = trace_placement(tmp_path / "t", latency_comm="wl-sleeper")
    # CPU 1 idles [100, 900); waits: sleeper [200, 600), hog 12 [100, 900) (it
    # waited while its own CPU idled, which counts), hog 10 [700, 1000). One
    # idle CPU could have taken one of them throughout: 800 ns.
    assert out["wc_loss_s"] == pytest.approx(800e-9)
    assert out["latency_n"] == 1 and out["latency_p99_ns"] == pytest.approx(400)
    assert out["wait_p50_ns"] == pytest.approx(400)


def test_a_sampled_switch_stream_is_refused(tmp_path):
    from aios_lab.analysis.work_conservation import trace_work_conservation
    from aios_lab.errors import TraceError
    from aios_lab.telemetry.writer import TraceWriter

    rows = [{"ts_ns": t, "cpu": 0, "prev_pid": 0, "next_pid": 5, "next_comm": "x", "next_wait_ns": None,
             "sample_weight": 4} for t in (0, 100)]
    with TraceWriter(tmp_path / "t", {"collector": {"kind": "test"}}) as w:
        w.append("switches", rows)
    with pytest.raises(TraceError, match="switch stream is sampled") as exc:
        trace_work_conservation(tmp_path / "t")
    assert "--stream-budget 0" in exc.value.one_line()
