"""The live status record: what `aios-lab status` reads about the attached policy.

A deploying process (sched.deployment) writes a small record in
/run/aios-lab (its pid, the policy, the kernel ids of its stats and model
control maps); `live_status` opens those maps by id. Ids of freed maps
cannot be opened, so a stale record is detected and removed, never trusted.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bpf import Map
from ..errors import BpfError
from . import sched_ext

RECORD_DIR = Path(os.environ.get("AIOS_LAB_RUN_DIR", "/run/aios-lab"))


def _record_path() -> Path:
    return RECORD_DIR / "deployed.json"


@dataclass
class DeployRecord:
    pid: int
    policy: str
    ops_name: str
    stats_map_id: int | None
    stat_names: list[str]
    started: float
    tunables: dict[str, Any]
    # Set by the policy's session: {"model": {"ctl_map_id", "version_offset",
    # "swaps_offset", "kind"}} lets `status` read the live model version.
    extra: dict[str, Any] = field(default_factory=dict)


def read_record() -> DeployRecord | None:
    try:
        data = json.loads(_record_path().read_text())
        return DeployRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def live_status() -> dict:
    """sched_ext state plus, when an aios-lab policy is attached, its stats.

    The record is trusted only if its process is alive, sched_ext names the
    same ops, and the stats map id still opens; otherwise it is removed.
    """
    st = sched_ext.read_state()
    out: dict[str, Any] = {"sched_ext": st.describe(), "policy": None}
    rec = read_record()
    if rec is None:
        return out
    alive = _pid_alive(rec.pid)
    if not alive or st.state != "enabled" or st.ops != rec.ops_name:
        try:
            _record_path().unlink()
        except OSError:
            pass
        out["stale_record_removed"] = True
        return out
    policy: dict[str, Any] = {"name": rec.policy, "pid": rec.pid, "uptime_s": round(time.time() - rec.started, 1),
                              "tunables": rec.tunables}
    if rec.stats_map_id is not None:
        try:
            with Map.from_id(rec.stats_map_id) as m:
                policy["stats"] = {n: m.sum_percpu_u64(i.to_bytes(4, "little")) for i, n in enumerate(rec.stat_names)}
        except BpfError as exc:
            policy["stats_error"] = exc.one_line()
    model = _model_status(rec.extra.get("model"))
    if model is not None:
        policy["model"] = model
    out["policy"] = policy
    return out


def _model_status(spec: Any) -> dict[str, Any] | None:
    """The live model's version from its control map: a u64 read at the offset
    the session recorded, so no BTF has to be parsed here."""
    if not isinstance(spec, dict) or not isinstance(spec.get("ctl_map_id"), int):
        return None
    out: dict[str, Any] = {"kind": spec.get("kind")}
    try:
        with Map.from_id(spec["ctl_map_id"]) as m:
            raw = m.lookup((0).to_bytes(4, "little"))
    except BpfError as exc:
        out["error"] = exc.one_line()
        return out
    for key in ("version", "swaps"):
        off = spec.get(f"{key}_offset")
        if isinstance(raw, bytes) and isinstance(off, int) and 0 <= off <= len(raw) - 8:
            out[key] = int.from_bytes(raw[off:off + 8], "little")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
