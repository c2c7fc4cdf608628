"""Drain the policy's `decisions` ring into lb_decisions rows.

Records are kept as raw bytes in the ring callback (the cheapest thing a
Python callback can do) and decoded in batches with a numpy dtype built
from the BTF layout of struct mllb_decision, which matters in a TCG guest
where every Python operation per record is felt.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ..bpf import BpfObject, RingBuffer
from ..errors import LayoutError
from ..sched.policy import ModelSpec
from ..telemetry.schema import LB_FEATURES

class DecisionLog:
    """Consume a policy's decision ring; `take()` returns a DataFrame of new rows."""

    POLL_BUDGET = 8192

    def __init__(self, obj: BpfObject, spec: ModelSpec) -> None:
        if not spec.decisions_ring:
            raise LayoutError("this policy's manifest names no decisions_ring")
        ctype = obj.btf.ctypes_type("mllb_decision")
        self._size = ctypes.sizeof(ctype)
        self._dtype = np.dtype(ctype)
        enum = obj.btf.enum(spec.features_enum)
        names = [n.removeprefix(spec.feature_prefix).lower()
                 for n, _ in sorted(enum.items(), key=lambda kv: kv[1]) if n.startswith(spec.feature_prefix)]
        if names != LB_FEATURES:
            raise LayoutError(f"enum {spec.features_enum} lists {names}, the trace schema {LB_FEATURES}",
                              hint="update LB_FEATURES in telemetry/schema.py together with intf.h")
        self._raw: list[bytes] = []
        self.ring = RingBuffer(obj.map(spec.decisions_ring), self._raw.append)

    def drain(self) -> int:
        """Consume everything available now."""
        total = 0
        while (n := self.ring.consume(max_records=self.POLL_BUDGET)) > 0:
            total += n
        return total

    def take(self) -> np.ndarray:
        """Records drained since the last call, as a structured array (cheap);
        decode() turns it into lb_decisions columns."""
        raw, self._raw[:] = b"".join(r[:self._size] for r in self._raw), []
        return np.frombuffer(raw, dtype=self._dtype)

    def close(self) -> None:
        self.ring.close()


def decode(a: np.ndarray):
    """struct mllb_decision records -> a DataFrame of lb_decisions columns.

    pandas is imported here, not at module load: in a TCG guest importing it
    costs over a minute, and a deployment that writes no trace never needs it."""
    import pandas as pd

    cols: dict[str, object] = {
        "ts_ns": a["ts_ns"].astype(np.int64), "pid": a["pid"].astype(np.int32),
        "src_cpu": a["src_cpu"].astype(np.int32), "dst_cpu": a["dst_cpu"].astype(np.int32),
        "ran_cpu": a["ran_cpu"].astype(np.int32),
        "site": np.where(a["site"] == 1, "pull", "wakeup"),
        "migrate": a["migrate"].astype(bool), "by_model": a["by_model"].astype(bool),
        "wait_after_ns": a["wait_after_ns"].astype(np.int64), "run_after_ns": a["run_after_ns"].astype(np.int64),
    }
    feats = a["features"].astype(np.int64).reshape(len(a), -1)
    for i, name in enumerate(LB_FEATURES):
        cols[f"f_{name}"] = feats[:, i]
    return pd.DataFrame(cols)
