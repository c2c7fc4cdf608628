"""A userspace governor that applies a learned frequency table (dvfs.table).

Every period, for every cpufreq policy:

1. utilisation: from /proc/stat deltas, the busy fraction of each CPU times
   scaling_cur_freq / cpuinfo_max_freq x 1024 (frequency-invariant, as the
   kernel's PELT util_avg), smoothed per CPU with a 32 ms half-life like
   PELT; the policy takes its busiest CPU. /proc/stat counts in USER_HZ
   ticks (10 ms), so one 10 ms period sees 0 or 1 tick per CPU: the
   smoothing is what turns that into a usable fraction.
2. queue: /proc/stat's procs_running counts runnable tasks, running ones
   included, at the instant of the read. Minus this process and minus the
   CPUs that were busy (the sum of busy fractions) it estimates the tasks
   waiting in the whole machine; spread over the online CPUs, rounded up,
   it is a lower bound on the busiest CPU's queue. It is system-wide and
   instantaneous, a coarse stand-in for the per-CPU nr_queued that BPF sees.
3. table.lookup(util, queue) gives a perf level, freq_for_perf maps it onto
   the policy's frequencies (its table, or cpuinfo_min..max in 100 MHz steps
   for pstate drivers), clamped to the scaling_min/max the policy had when we
   started (a user's cap stays a cap).
4. the frequency is written when it changes: scaling_setspeed under the
   userspace governor, or scaling_min_freq = scaling_max_freq on setpolicy
   drivers (intel_pstate, amd-pstate-epp active) that have no userspace
   governor.

The machine is put back as it was (governor, setspeed, min/max) on normal
exit, on exceptions, Ctrl-C, SIGTERM and SIGHUP. SIGKILL cannot be caught, so
what will be changed is saved to a state file (atomically) before anything is
changed; `restore_saved()` (`aios-lab freq restore`), and the start of every
later run, put back a state file whose process is dead.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..atomic import write_text_atomic
from ..dvfs.table import FreqTable, freq_for_perf
from ..errors import AiosError, CpufreqError, CpufreqPermissionError, InputError
from ..safe_read import load_json
from ..signals import StopRequested, StopSignals
from .sysfs import Cpufreq, PolicyInfo

STATE_FORMAT = "aios-lab.freq-governor-state"
PELT_HALFLIFE_S = 0.032

Event = Callable[[dict[str, Any]], None]


def default_state_file() -> Path:
    """/run is cleared at boot, as cpufreq settings are: a state file never
    outlives the settings it describes. AIOS_LAB_FREQ_STATE overrides it."""
    env = os.environ.get("AIOS_LAB_FREQ_STATE")
    return Path(env) if env else Path("/run/aios-lab/freq-governor.json")


# --------------------------------------------------------------------------- load

@dataclass(frozen=True)
class ProcStat:
    cpus: dict[int, tuple[int, int]]   # cpu -> (busy ticks, busy + idle ticks)
    procs_running: int


def read_proc_stat(proc_root: str | Path = "/") -> ProcStat:
    """Per-CPU busy/total ticks and procs_running from <proc_root>/proc/stat.

    busy = user + nice + system + irq + softirq (guest time is already in
    user/nice); total adds idle + iowait. steal is left out of both: time the
    hypervisor gave elsewhere says nothing about what this CPU needs."""
    path = Path(proc_root) / "proc/stat"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CpufreqError(f"cannot read {path}: {exc.strerror or exc}") from None
    cpus: dict[int, tuple[int, int]] = {}
    running = None
    for ln in lines:
        parts = ln.split()
        if not parts:
            continue
        if parts[0].startswith("cpu") and parts[0][3:].isdigit():
            v = [int(x) for x in parts[1:11]] + [0] * (10 - len(parts[1:11]))
            busy = v[0] + v[1] + v[2] + v[5] + v[6]
            cpus[int(parts[0][3:])] = (busy, busy + v[3] + v[4])
        elif parts[0] == "procs_running" and len(parts) > 1:
            running = int(parts[1])
    if not cpus or running is None:
        raise CpufreqError(f"{path} has no per-CPU lines or no procs_running: not a Linux /proc/stat")
    return ProcStat(cpus, running)


class LoadTracker:
    """Per-CPU frequency-invariant utilisation (0..1024) and a queue estimate."""

    def __init__(self, halflife_s: float = PELT_HALFLIFE_S) -> None:
        self.halflife_s = halflife_s
        self.prev: ProcStat | None = None
        self.util: dict[int, float] = {}
        self.nr_queued = 0

    def update(self, stat: ProcStat, dt_s: float, scale: dict[int, float]) -> bool:
        """Fold in a new sample; `scale[cpu]` = cur_freq / cpuinfo_max_freq.
        False for the first sample, which is only a baseline."""
        prev, self.prev = self.prev, stat
        if prev is None:
            return False
        decay = 0.5 ** (max(dt_s, 0.0) / self.halflife_s) if self.halflife_s > 0 else 0.0
        running = 0.0
        for cpu, (busy, total) in stat.cpus.items():
            if cpu not in prev.cpus:
                continue  # came online since the last sample
            d_busy = max(0, busy - prev.cpus[cpu][0])
            # iowait can go backwards on NO_HZ kernels: never let idle be negative.
            d_total = max(d_busy, total - prev.cpus[cpu][1])
            if d_total == 0:
                continue  # no tick in this period: no news, keep the average
            frac = d_busy / d_total
            running += frac
            sample = frac * scale.get(cpu, 1.0) * 1024.0
            old = self.util.get(cpu)
            self.util[cpu] = sample if old is None else old * decay + sample * (1.0 - decay)
        for cpu in [c for c in self.util if c not in stat.cpus]:
            del self.util[cpu]  # went offline
        waiting = max(0, stat.procs_running - 1 - round(running))  # -1: this process
        self.nr_queued = math.ceil(waiting / max(1, len(stat.cpus)))
        return True

    def policy_util(self, cpus: tuple[int, ...]) -> float:
        return max((self.util.get(c, 0.0) for c in cpus), default=0.0)


# --------------------------------------------------------------------------- saved state

def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in ticks since boot): with the
    pid it names one process, so a reused pid is not taken for the old one."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the name in (...) may hold spaces
    return fields[19] if len(fields) > 19 else None


def _owner_alive(state: dict) -> bool:
    pid = int(state.get("pid", 0))
    if pid <= 0 or pid == os.getpid():
        return False
    if state.get("pid_start") is None:  # saved without /proc: the pid alone must do
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return _proc_start_time(pid) == str(state["pid_start"])


class StateFileError(CpufreqError, InputError):
    """The governor's state file is unreadable or malformed (exit code 3)."""

    hint = "inspect it, put the settings back by hand, then delete it"


_POLICY_NAME = re.compile(r"policy\d{1,5}")
_GOVERNOR = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _load_state(path: Path) -> dict | None:
    """The state file, every field checked: it names sysfs paths that root
    writes, so a policy name of "../../x" must never reach them."""
    if not os.path.lexists(path):
        return None
    state = load_json(path, error=StateFileError, what="the saved cpufreq state", limit=1 << 20)
    if (not isinstance(state, dict) or state.get("format") != STATE_FORMAT
            or not isinstance(state.get("policies"), list)):
        raise StateFileError(f"{path} is not an aios-lab cpufreq state file")

    def bad(field: str) -> StateFileError:
        return StateFileError(f"the saved cpufreq state {path}: field {field} is malformed")
    pid = state.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2 ** 31:
        raise bad("pid")
    if not isinstance(state.get("pid_start", None), (str, int, type(None))) or isinstance(state.get("pid_start"), bool):
        raise bad("pid_start")
    if not isinstance(state.get("root", "/"), str):
        raise bad("root")
    for i, p in enumerate(state["policies"]):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not _POLICY_NAME.fullmatch(p["name"]):
            raise bad(f"policies[{i}].name")
        if p.get("mode") not in ("setspeed", "limits"):
            raise bad(f"policies[{i}].mode")
        if p["mode"] == "setspeed" and not (isinstance(p.get("governor"), str)
                                            and _GOVERNOR.fullmatch(p["governor"])):
            raise bad(f"policies[{i}].governor")
        for k in ("setspeed_khz", "min_khz", "max_khz"):
            v = p.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 32):
                raise bad(f"policies[{i}].{k}")
        if p["mode"] == "limits" and (p.get("min_khz") is None or p.get("max_khz") is None):
            raise bad(f"policies[{i}].min_khz/max_khz")
    return state


def _save_state(path: Path, root: str | Path, policies: list[dict]) -> None:
    state = {"format": STATE_FORMAT, "pid": os.getpid(), "pid_start": _proc_start_time(os.getpid()),
             "saved_at": time.time(), "root": os.path.abspath(root), "policies": policies}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(state, indent=1) + "\n")
    except PermissionError:
        raise CpufreqPermissionError(f"cannot write the governor's state file {path}: permission denied") from None
    except OSError as exc:
        raise CpufreqError(f"cannot write the governor's state file {path}: {exc.strerror or exc}",
                           hint="nothing was changed; pick another --state-file") from None


def _snapshot(info: PolicyInfo, mode: str) -> dict:
    return {"name": info.name, "mode": mode, "driver": info.driver, "governor": info.governor,
            "setspeed_khz": info.setspeed_khz, "min_khz": info.min_khz, "max_khz": info.max_khz}


def _restore_policy(cf: Cpufreq, saved: dict) -> list[str]:
    """Put one policy back. Only what differs is written, so a restore after
    a half-done start never writes an attribute that was never changed (and
    may be the read-only one that stopped us). Limits are put back only where
    we pinned them: in setspeed mode they were never ours to touch."""
    name, done = saved["name"], []
    if saved["mode"] == "limits":
        want = (int(saved["min_khz"]), int(saved["max_khz"]))
        if (cf.read_khz(name, "scaling_min_freq"), cf.read_khz(name, "scaling_max_freq")) != want:
            cf.set_limits(name, *want)
            done.append(f"{name}: min/max {want[0]}/{want[1]} kHz")
        return done
    gov = cf.read(name, "scaling_governor")
    if saved["governor"] == "userspace":
        if gov != "userspace":
            cf.set_governor(name, "userspace")
            done.append(f"{name}: governor userspace")
        speed = saved.get("setspeed_khz")
        if speed is not None and cf.read(name, "scaling_setspeed") != str(speed):
            cf.write(name, "scaling_setspeed", int(speed))
            done.append(f"{name}: setspeed {speed} kHz")
    elif gov != saved["governor"]:
        cf.set_governor(name, saved["governor"])
        done.append(f"{name}: governor {saved['governor']}")
    return done


def _restore_all(cf: Cpufreq, policies: list[dict]) -> tuple[list[str], list[str]]:
    done: list[str] = []
    errors: list[str] = []
    for saved in policies:
        try:
            done += _restore_policy(cf, saved)
        except AiosError as exc:  # keep going: put back every policy we can
            errors.append(exc.one_line())
    return done, errors


def governor_state(state_file: str | Path | None = None) -> dict | None:
    """What a state file says, for `freq status`: None when there is none;
    `alive` False means a governor was killed and `restore_saved()` is due."""
    path = Path(state_file) if state_file else default_state_file()
    state = _load_state(path)
    if state is None:
        return None
    return {"state_file": str(path), "pid": state.get("pid"), "alive": _owner_alive(state),
            "root": state.get("root"), "policies": [p.get("name") for p in state["policies"]]}


def restore_saved(state_file: str | Path | None = None, *, root: str | Path | None = None) -> dict | None:
    """Put back the settings a killed governor saved; None when there is no
    state file. Refuses while the governor that wrote it still runs (it
    restores on its own exit). The file is removed only once all is back."""
    path = Path(state_file) if state_file else default_state_file()
    state = _load_state(path)
    if state is None:
        return None
    if _owner_alive(state):
        raise CpufreqError(f"the governor that saved {path} (pid {state['pid']}) is still running",
                           hint=f"stop it (kill {state['pid']}); it restores the settings when it exits")
    root = root if root is not None else state.get("root", "/")
    done, errors = _restore_all(Cpufreq(root), state["policies"])
    if errors:
        raise CpufreqError(f"could not restore {len(errors)} policies saved in {path}: {errors[0]}",
                           hint="fix that and run `aios-lab freq restore` again; the state file is kept")
    path.unlink(missing_ok=True)
    return {"state_file": str(path), "pid": state.get("pid"), "root": str(root), "restored": done}


# --------------------------------------------------------------------------- the loop

@dataclass
class _Plan:
    info: PolicyInfo
    mode: str              # "setspeed" (userspace governor) or "limits" (min = max)
    freqs: list[int]
    last_khz: int | None = None

    def target(self, perf: int) -> int:
        khz = freq_for_perf(perf, self.freqs)
        return min(max(khz, self.info.min_khz), self.info.max_khz)

    def scale(self, cf: Cpufreq) -> float:
        """cur/max for frequency invariance; when the driver gives no
        scaling_cur_freq, what we last set is the best guess."""
        try:
            cur = cf.read_khz(self.info.name, "scaling_cur_freq")
        except CpufreqError:
            cur = self.last_khz or self.info.cpuinfo_max_khz
        return min(1.0, cur / self.info.cpuinfo_max_khz) if self.info.cpuinfo_max_khz else 1.0


def _apply(cf: Cpufreq, plan: _Plan, khz: int) -> None:
    if plan.mode == "setspeed":
        cf.write(plan.info.name, "scaling_setspeed", khz)
    else:
        cf.pin(plan.info.name, khz)


def run_table_governor(table: FreqTable, *, root: str | Path = "/", proc_root: str | Path = "/",
                       period_s: float = 0.01, duration_s: float | None = None,
                       state_file: str | Path | None = None, on_event: Event | None = None,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] | None = None,
                       util_halflife_s: float = PELT_HALFLIFE_S) -> dict[str, Any]:
    """Drive every cpufreq policy from `table` until `duration_s` passes (None:
    until Ctrl-C, SIGTERM or SIGHUP); restore everything, return a summary.

    Raises CpufreqError (settings restored) when a write fails; when the
    restore fails too, the error says so and the state file is kept."""
    emit = on_event or (lambda e: None)
    table.validate()
    if not period_s > 0:
        raise CpufreqError(f"period must be > 0 s, not {period_s}")
    path = Path(state_file) if state_file else default_state_file()
    stale = _load_state(path)
    if stale is not None:
        if _owner_alive(stale):
            raise CpufreqError(f"another aios-lab frequency governor (pid {stale['pid']}) is running ({path})",
                               hint=f"stop it first (kill {stale['pid']}); it restores the settings on exit")
        emit({"event": "stale_restored", **(restore_saved(path) or {})})
    cf = Cpufreq(root)
    plans = [_Plan(i, "setspeed" if i.has_userspace else "limits", i.frequencies()) for i in cf.policies()]
    tracker = LoadTracker(util_halflife_s)
    tracker.update(read_proc_stat(proc_root), 0.0, {})  # baseline; and /proc is checked before any change
    saved = [_snapshot(p.info, p.mode) for p in plans]
    _save_state(path, root, saved)

    summary: dict[str, Any] = {
        "policies": {p.info.name: {"mode": p.mode, "driver": p.info.driver, "cpus": list(p.info.cpus)}
                     for p in plans},
        "periods": 0, "writes": 0, "residency": {p.info.name: {} for p in plans},
        "stopped": None, "restored": False, "state_file": str(path)}
    failure: BaseException | None = None
    with StopSignals() as stops:
        sleep = sleep or stops.sleep
        try:
            for p in plans:
                if p.mode == "setspeed":
                    cf.set_governor(p.info.name, "userspace")
            emit({"event": "started", "policies": summary["policies"], "state_file": str(path)})
            start = next_t = last_t = clock()
            while (duration_s is None or clock() - start < duration_s) and stops.requested is None:
                next_t += period_s
                now = clock()
                next_t = max(next_t, now)  # fell behind: do not try to catch up
                sleep(next_t - now)
                if stops.requested is not None:
                    break
                _one_period(cf, plans, tracker, table, proc_root, clock() - last_t, summary, emit)
                last_t = clock()
            summary["stopped"] = stops.reason or "duration"
        except StopRequested as exc:  # a second signal
            summary["stopped"] = exc.name
        except KeyboardInterrupt:
            summary["stopped"] = "sigint"
        except BaseException as exc:  # restore below, then re-raise
            failure = exc
        finally:
            stops.hold()  # a second Ctrl-C cannot cut the restore in half
        done, errors = _restore_all(cf, saved)
    if not errors:
        path.unlink(missing_ok=True)
        summary["restored"] = True
    emit({"event": "restored" if not errors else "restore_failed", "restored": done, "errors": errors})
    if errors:
        what = f"{_one_line(failure)}; restoring then failed too" if failure else "restoring failed"
        raise CpufreqError(f"{what}: {errors[0]}",
                           hint=f"state kept in {path}: fix that and run `aios-lab freq restore`") from failure
    if failure is not None:
        raise failure
    return summary


def _one_line(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, AiosError) else f"{type(exc).__name__}: {exc}"


def _one_period(cf: Cpufreq, plans: list[_Plan], tracker: LoadTracker, table: FreqTable,
                proc_root: str | Path, dt_s: float, summary: dict, emit: Event) -> None:
    stat = read_proc_stat(proc_root)
    scale: dict[int, float] = {}
    for p in plans:
        s = p.scale(cf)
        scale.update({c: s for c in p.info.cpus})
    if not tracker.update(stat, dt_s, scale):
        return
    summary["periods"] += 1
    for p in plans:
        util = tracker.policy_util(p.info.cpus)
        perf = table.lookup(util, tracker.nr_queued)
        khz = p.target(perf)
        if khz != p.last_khz:
            _apply(cf, p, khz)
            p.last_khz = khz
            summary["writes"] += 1
            emit({"event": "set", "policy": p.info.name, "khz": khz, "util": round(util, 1),
                  "nr_queued": tracker.nr_queued, "perf": perf})
        res = summary["residency"][p.info.name]
        res[khz] = res.get(khz, 0) + 1
