"""analysis.db's own helpers: exact quantiles in bounded memory against a
full sort, and whether a trace's stream was sampled."""
import math

import numpy as np
import pytest

from aios_lab.analysis.db import TraceDB, exact_quantiles, stream_sampled
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


class _Db:
    """exact_quantiles needs only rows(); a bare duckdb connection serves."""

    def __init__(self, values: np.ndarray) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.con.register("v", __import__("pandas").DataFrame({"w": values}))

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_quantiles_match_a_full_sort(seed):
    """Nearest rank on heavy-tailed data with ties, against numpy's sort."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50_000))
    v = np.concatenate([rng.lognormal(9, 2.5, n).astype(np.int64), rng.integers(0, 3, n // 10),
                        np.full(n // 7, 123_456)])
    qs = (0.0, 0.5, 0.9, 0.99, 0.999, 1.0)
    s = np.sort(v)
    want = [int(s[max(1, math.ceil(q * len(s))) - 1]) for q in qs]
    assert exact_quantiles(_Db(v), "v", "w", qs) == want
    assert exact_quantiles(_Db(np.array([7] * 5)), "v", "w", (0.5,)) == [7]
    assert exact_quantiles(_Db(np.array([], dtype=np.int64)), "v", "w", (0.5,)) == [None]
