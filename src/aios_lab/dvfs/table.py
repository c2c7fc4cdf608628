"""The learned frequency table: what `train freq` writes and `deploy freq` reads.

A table maps a CPU's state to a performance target. The state is what both
the simulator and BPF can observe cheaply on every tick:

* utilisation, frequency-invariant, on the kernel's capacity scale 0..1024
  (busy fraction x current perf / max perf, as PELT's util_avg), cut into
  UTIL_BUCKETS buckets of equal width;
* the number of tasks waiting in the CPU's queue (0, 1, 2, 3 or more).

The value is a perf level 1..1024, a share of the highest frequency. Each
backend maps it to what its knob takes: sysfs picks the lowest available
frequency at or above perf/1024 x max; sched_ext passes it to
scx_bpf_cpuperf_set() scaled by the CPU's capacity and divided by
schedutil's 1.25 headroom, because schedutil reads the value on the
capacity scale and applies that headroom again (see `cpuperf_request`).
A table may instead be indexed by the per-task state (`state = "task"`,
dvfs.task_signal): the need bucket (estimated queued work over the time to
its deadline, 16 buckets of the 0..1024 speed scale) and the arrival-rate
bucket (4), the same 16 x 4 layout, so it fits the same BPF array map.
The layout is mirrored by policies/freq/intf.h (FREQ_UTIL_BUCKETS,
FREQ_RQ_BUCKETS); tests/sched/kinds/freq_table/test_layout.py checks they agree.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from ..errors import ModelError
from ..safe_read import load_json

FORMAT = "aios-lab.freq-table"
FORMAT_VERSION = 1
UTIL_BUCKETS = 16
RQ_BUCKETS = 4
PERF_MAX = 1024
UTIL_MAX = 1024
# schedutil: next_freq = 1.25 * max_freq * util / max (map_util_perf / get_next_freq).
SCHEDUTIL_HEADROOM = 1.25
# what a table's two indices are (FreqTable.state): (utilisation, queue length), or the
# per-task state (need from per-task estimates, arrival rate; dvfs.task_signal)
STATES = ("util-queue", "task")


def util_bucket(util: float | np.ndarray) -> int | np.ndarray:
    """Bucket of a utilisation on the 0..1024 scale (same integer arithmetic as BPF)."""
    if isinstance(util, (int, float)):  # the simulator's hot path: no numpy round trip
        u = min(max(int(util), 0), UTIL_MAX) if util == util else 0  # NaN -> bucket 0
        return min(u * UTIL_BUCKETS // UTIL_MAX, UTIL_BUCKETS - 1)
    u = np.clip(np.asarray(util, dtype=np.int64), 0, UTIL_MAX)
    b = np.minimum(u * UTIL_BUCKETS // UTIL_MAX, UTIL_BUCKETS - 1)  # BPF: min(u >> 6, 15)
    return int(b) if b.ndim == 0 else b


def rq_bucket(nr_queued: int | np.ndarray) -> int | np.ndarray:
    if isinstance(nr_queued, (int, float)):
        return min(max(int(nr_queued), 0), RQ_BUCKETS - 1)
    b = np.clip(np.asarray(nr_queued, dtype=np.int64), 0, RQ_BUCKETS - 1)
    return int(b) if b.ndim == 0 else b


def cpuperf_request(perf: int, cap: int = PERF_MAX) -> int:
    """The value to pass to scx_bpf_cpuperf_set() on a CPU of capacity `cap`
    (scx_bpf_cpuperf_cap, 1..1024) so that it ends at `perf`/1024 of its own
    highest frequency. schedutil reads the target as utilisation on the
    capacity scale and picks 1.25 x max_freq x util / cap (get_next_freq with
    max = arch_scale_cpu_capacity), so the request is ceil(perf x cap / 1024
    / 1.25), clamped to 1..1024. Integer form, as BPF computes it:
    (perf * cap * 4 + 5119) / 5120; with cap 1024 that is (perf * 4 + 4) / 5."""
    p = max(1, min(PERF_MAX, int(perf)))
    c = int(cap) if 1 <= int(cap) <= PERF_MAX else PERF_MAX  # BPF: an invalid capacity reads as full
    return max(1, min(PERF_MAX, (p * c * 4 + 5 * PERF_MAX - 1) // (5 * PERF_MAX)))


def freq_for_perf(perf: int, available_khz: list[int]) -> int:
    """Lowest available frequency at or above perf/1024 of the highest one."""
    freqs = sorted(int(f) for f in available_khz)
    if not freqs:
        raise ModelError("no available frequencies to map the table onto")
    want = freqs[-1] * max(1, min(PERF_MAX, int(perf))) / PERF_MAX
    for f in freqs:
        if f >= want - 1e-9:
            return f
    return freqs[-1]


@dataclass
class FreqTable:
    """perf[util_bucket][rq_bucket] -> perf level 1..1024."""

    perf: np.ndarray
    method: str = "manual"
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    state: str = "util-queue"      # what the two indices mean: one of STATES

    def __post_init__(self) -> None:
        self.perf = np.asarray(self.perf)
        self.validate()

    def validate(self) -> None:
        p = self.perf
        if p.shape != (UTIL_BUCKETS, RQ_BUCKETS):
            raise ModelError(f"frequency table has shape {tuple(p.shape)}, not "
                             f"({UTIL_BUCKETS}, {RQ_BUCKETS}) (util buckets x queue buckets); "
                             "retrain it with this aios-lab (`aios-lab train freq`)")
        if p.dtype.kind == "f":
            if not np.all(np.isfinite(p)):
                raise ModelError("frequency table holds NaN or infinite values; retrain it")
            if not np.all(p == np.round(p)):
                raise ModelError("frequency table holds non-integer perf levels; expected integers 1..1024")
        elif p.dtype.kind not in "iu":
            raise ModelError(f"frequency table values are {p.dtype}, not integers 1..1024")
        if p.min() < 1 or p.max() > PERF_MAX:
            raise ModelError(f"frequency table values span {int(p.min())}..{int(p.max())}, "
                             f"outside the perf range 1..{PERF_MAX}")
        self.perf = p.astype(np.int64)
        if self.state not in STATES:
            raise ModelError(f"frequency table state {self.state!r} is not one of {', '.join(STATES)}")
        if not 1 <= int(self.version) < 2 ** 63:
            raise ModelError(f"table version {self.version} is not >= 1")

    def lookup(self, util: float, nr_queued: int) -> int:
        return int(self.perf[util_bucket(util), rq_bucket(nr_queued)])

    @classmethod
    def constant(cls, perf: int, method: str = "constant") -> "FreqTable":
        return cls(np.full((UTIL_BUCKETS, RQ_BUCKETS), int(perf), dtype=np.int64), method=method)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": int(self.version),
                "method": self.method, "util_buckets": UTIL_BUCKETS, "rq_buckets": RQ_BUCKETS,
                "perf": self.perf.astype(int).tolist(), "meta": self.meta,
                **({} if self.state == STATES[0] else {"state": self.state})}

    @classmethod
    def from_dict(cls, d: Any, where: str = "table") -> "FreqTable":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelError(f"{where} is not an aios-lab frequency table (format {FORMAT!r} expected)",
                             hint="train one with `aios-lab train freq`")
        if d.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{where} has format_version {d.get('format_version')!r}; this aios-lab "
                             f"reads {FORMAT_VERSION}", hint="retrain it with `aios-lab train freq`")
        rows = d.get("perf")
        if (not isinstance(rows, list) or any(not isinstance(r, list) for r in rows)
                or len({len(r) for r in rows}) > 1):
            raise ModelError(f"{where}: 'perf' must be a list of equal-length lists of integers")
        for r in rows:
            for v in r:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ModelError(f"{where}: perf value {v!r} is not a number")
        try:
            arr = np.array(rows, dtype=np.float64) if rows else np.zeros((0, 0))
        except OverflowError:
            raise ModelError(f"{where}: a perf value is too large to be a number") from None
        version = d.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ModelError(f"{where}: 'version' must be an integer >= 1, not {version!r}")
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise ModelError(f"{where}: 'meta' must be an object, not {type(meta).__name__}")
        return cls(arr, method=str(d.get("method", "unknown")), meta=dict(meta), version=version,
                   state=str(d.get("state", STATES[0])))


def save_table(path: Path | str, table: FreqTable) -> Path:
    """Validate and write atomically; on error nothing new is left behind."""
    path = Path(path)
    table.validate()
    try:
        text = json.dumps(table.to_dict(), indent=1, allow_nan=False) + "\n"
    except ValueError:
        raise ModelError("frequency table metadata holds NaN or infinity; it cannot be saved") from None
    except TypeError as e:
        raise ModelError(f"frequency table metadata cannot be written as JSON: {e}") from None
    try:
        write_text_atomic(path, text)
    except OSError as e:
        raise ModelError(f"cannot write frequency table {path}: {e.strerror or e}",
                         hint="check that the folder exists and is writable") from None
    return path


def load_table(path: Path | str) -> FreqTable:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"frequency table {path} does not exist", hint="train one with `aios-lab train freq`")
    # Bounded, non-blocking, depth- and digit-limited (safe_read): a FIFO or /dev/zero is refused.
    d = load_json(path, error=ModelError, what="frequency table", limit=4 << 20,
                  parse_constant=lambda c: math.nan, fix="retrain it with `aios-lab train freq`")
    return FreqTable.from_dict(d, where=f"frequency table {path}")
