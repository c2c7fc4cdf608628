"""analysis.db's own helpers, on traces with known contents."""
from aios_lab.analysis.db import TraceDB, stream_sampled
from aios_lab.telemetry.trace import Trace

from tests.helpers.traces import metrics_trace


def test_a_stream_is_sampled_when_a_row_stands_for_more_than_one_event(tmp_path):
    every = metrics_trace(tmp_path / "every", waits_us=[1, 2, 3])
    sampled = metrics_trace(tmp_path / "sampled", waits_us=[1, 2, 3], sample_weight=4)
    with TraceDB(Trace.open(every)) as db:
        assert not stream_sampled(db, "switches")
        assert not stream_sampled(db, "wakeups")  # a table the trace lacks: an empty view
    with TraceDB(Trace.open(sampled)) as db:
        assert stream_sampled(db, "switches")
