"""Per-CPU counters of the attached aios-lab sched_ext policy, per interval.

The deploying controller publishes its stats map id (sched.status.read_record);
we open the map by id, so nothing is pinned and a policy that went away is
simply no longer sampled.
"""
from __future__ import annotations

from ..sched import sched_ext, status
from ..bpf import Map
from ..errors import BpfError


class PolicyStatsSampler:
    def __init__(self) -> None:
        self.policy: str | None = None
        self._map: Map | None = None
        self._names: list[str] = []
        self._prev: dict[tuple[int, str], int] = {}

    def _attach_if_deployed(self) -> None:
        if self._map is not None or not sched_ext.available():
            return
        rec = status.read_record()
        if rec is None or rec.stats_map_id is None:
            return
        st = sched_ext.read_state()
        if st.state != "enabled" or st.ops != rec.ops_name:
            return
        try:
            self._map = Map.from_id(rec.stats_map_id)
        except BpfError:
            return
        self.policy, self._names = rec.policy, rec.stat_names
        # Counts from before we started watching belong to no interval.
        self._prev = {key: val for key, val in self._read().items()}

    def _read(self) -> dict[tuple[int, str], int]:
        out = {}
        for idx, name in enumerate(self._names):
            per_cpu = self._map.lookup(idx.to_bytes(4, "little")) or []
            for cpu, raw in enumerate(per_cpu):
                out[(cpu, name)] = int.from_bytes(raw[:8], "little")
        return out

    def sample(self, start_ns: int, end_ns: int) -> list[dict]:
        """Rows of POLICY_STATS for one interval; empty when no policy is attached."""
        fresh = self._map is None
        try:
            self._attach_if_deployed()
            if self._map is None or fresh:
                return []
            cur = self._read()
        except BpfError:
            self.close()  # the policy was detached under us
            return []
        rows = [{"interval_start_ns": start_ns, "interval_end_ns": end_ns, "cpu": cpu, "policy": self.policy,
                 "stat": name, "value": val - self._prev.get((cpu, name), 0)} for (cpu, name), val in cur.items()]
        self._prev = cur
        return rows

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._map = None
