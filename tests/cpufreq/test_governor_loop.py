"""The table-driven userspace governor: what it measures, what it writes, and
that the machine always ends as it started (exit, error, Ctrl-C, SIGTERM,
a failure halfway, SIGKILL through the state file)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.cpufreq import governor_loop as gl
from aios_lab.cpufreq import sysfs
from aios_lab.cpufreq.governor_loop import (LoadTracker, ProcStat as Sample, read_proc_stat, restore_saved,
                                            run_table_governor)
from aios_lab.dvfs.table import RQ_BUCKETS, UTIL_BUCKETS, FreqTable
from aios_lab.errors import CpufreqError, CpufreqUnavailable

from tests.helpers import REPO

from tests.helpers.cpufreq_trees import CPUFREQ, ProcStat, acpi_cpufreq_tree, attr, intel_pstate_tree, make_read_only, set_attr

PERIOD = 0.25  # exact in binary, so a fake run of 2.5 s is exactly 10 periods
SRC = str(REPO / "src")


def table_by_util(fn) -> FreqTable:
    return FreqTable(np.array([[fn(u, q) for q in range(RQ_BUCKETS)] for u in range(UTIL_BUCKETS)]))


class Sim:
    """A fake clock whose sleep is one period of simulated load: it advances
    /proc/stat, optionally plays the kernel (scaling_cur_freq follows what was
    set), then runs the test's hook for that period."""

    def __init__(self, root: Path, ncpu: int, busy: list[int], procs_running: int = 1,
                 kernel: bool = False) -> None:
        self.root, self.t, self.n = root, 5000.0, 0
        self.stat = ProcStat(root, ncpu)
        self.busy, self.procs_running, self.kernel = busy, procs_running, kernel
        self.hooks: dict[int, Callable[[], None]] = {}
        self.events: list[dict] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt
        self.n += 1
        self.stat.advance(self.busy, [100 - b for b in self.busy], self.procs_running)
        if self.kernel:
            for pol in sorted((self.root / CPUFREQ).iterdir()):
                speed = (pol / "scaling_setspeed").read_text().strip()
                if (pol / "scaling_governor").read_text().strip() == "userspace" and speed.isdigit():
                    (pol / "scaling_cur_freq").write_text(speed + "\n")
        if self.n in self.hooks:
            self.hooks[self.n]()

    def run(self, table: FreqTable, state_file: Path, periods: int = 10, **kw) -> dict:
        kw.setdefault("util_halflife_s", PERIOD)
        return run_table_governor(table, root=self.root, proc_root=self.root, period_s=PERIOD,
                                  duration_s=periods * PERIOD, state_file=state_file,
                                  on_event=self.events.append, clock=self.clock, sleep=self.sleep, **kw)

    def sets(self) -> list[tuple[str, int]]:
        return [(e["policy"], e["khz"]) for e in self.events if e["event"] == "set"]


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "run" / "freq-governor.json"


@pytest.fixture
def acpi(tmp_path) -> Path:
    root = tmp_path / "host"
    acpi_cpufreq_tree(root, ncpu=2, cur_khz=3501000)
    return root


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def write_state(path: Path, root: Path, policies: list[dict], pid: int, pid_start: str | None = "1") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": gl.STATE_FORMAT, "pid": pid, "pid_start": pid_start,
                                "saved_at": 0, "root": str(root), "policies": policies}))


def saved(name: str, mode: str = "setspeed", governor: str = "schedutil", setspeed=None,
          lo: int = 1400000, hi: int = 3501000) -> dict:
    return {"name": name, "mode": mode, "driver": "acpi-cpufreq", "governor": governor,
            "setspeed_khz": setspeed, "min_khz": lo, "max_khz": hi}


# --------------------------------------------------------------------------- measuring

def test_proc_stat_parsing_leaves_steal_and_guest_out(tmp_path):
    ps = ProcStat(tmp_path, 2)
    ps.advance([30, 100], [70, 0], procs_running=5)
    s = read_proc_stat(tmp_path)
    assert s.cpus == {0: (30, 100), 1: (100, 100)} and s.procs_running == 5


def test_the_real_proc_stat_parses():
    s = read_proc_stat("/")
    assert s.cpus and s.procs_running >= 1
    assert all(total >= busy >= 0 for busy, total in s.cpus.values())


def test_utilisation_is_frequency_invariant_and_smoothed_like_pelt():
    tr = LoadTracker(halflife_s=0.032)
    assert tr.update(Sample({0: (0, 0), 1: (0, 0)}, 1), 0.0, {}) is False  # baseline only
    tr.update(Sample({0: (50, 100), 1: (100, 100)}, 1), 0.032, {0: 0.5, 1: 1.0})
    assert tr.util == {0: pytest.approx(256.0), 1: pytest.approx(1024.0)}  # 50% busy at half speed
    # One half-life later with CPU 1 idle: halfway from 1024 to 0.
    tr.update(Sample({0: (100, 200), 1: (100, 200)}, 1), 0.032, {0: 0.5, 1: 1.0})
    assert tr.util[1] == pytest.approx(512.0) and tr.util[0] == pytest.approx(256.0)
    assert tr.policy_util((0, 1)) == pytest.approx(512.0)


def test_a_cpu_without_ticks_keeps_its_average_and_iowait_going_back_is_harmless():
    tr = LoadTracker(halflife_s=0.032)
    tr.update(Sample({0: (0, 0)}, 1), 0.0, {})
    tr.update(Sample({0: (10, 10)}, 1), 0.01, {})
    tr.update(Sample({0: (10, 10)}, 1), 0.01, {})  # no tick: no news
    assert tr.util[0] == pytest.approx(1024.0)
    tr.update(Sample({0: (20, 15)}, 1), 0.01, {})  # idle counter went backwards by 5: read as fully busy
    assert tr.util[0] == pytest.approx(1024.0)


def test_queue_estimate_is_waiting_tasks_over_cpus_rounded_up():
    tr = LoadTracker()
    tr.update(Sample({0: (0, 0), 1: (0, 0)}, 1), 0.0, {})
    tr.update(Sample({0: (10, 10), 1: (10, 10)}, 6), 0.01, {})  # 6 runnable - us - 2 running = 3 waiting
    assert tr.nr_queued == 2
    tr.update(Sample({0: (20, 20), 1: (20, 20)}, 3), 0.01, {})  # 3 - 1 - 2 = 0
    assert tr.nr_queued == 0
    tr.update(Sample({0: (20, 30), 1: (20, 30)}, 4), 0.01, {})  # idle machine, 3 just woken
    assert tr.nr_queued == 2


# --------------------------------------------------------------------------- driving

def test_acpi_cpufreq_gets_the_table_frequency_through_setspeed(acpi, state):
    sim = Sim(acpi, 2, busy=[100, 0])
    seen = {}

    def during():
        seen.update({p: (attr(acpi, p, "scaling_governor"), attr(acpi, p, "scaling_setspeed"))
                     for p in ("policy0", "policy1")})
        seen["state"] = json.loads(state.read_text())

    sim.hooks[3] = during
    res = sim.run(table_by_util(lambda u, q: 1024 if u >= 8 else 1), state)
    assert seen["policy0"] == ("userspace", "3501000") and seen["policy1"] == ("userspace", "1400000")
    assert [p["governor"] for p in seen["state"]["policies"]] == ["schedutil", "schedutil"]
    assert seen["state"]["pid"] == os.getpid()
    assert res["writes"] == 2 and res["periods"] == 10 and res["stopped"] == "duration"
    assert res["residency"] == {"policy0": {3501000: 10}, "policy1": {1400000: 10}}
    assert res["policies"]["policy0"]["mode"] == "setspeed"
    assert res["restored"] is True and not state.exists()
    assert [attr(acpi, p, "scaling_governor") for p in ("policy0", "policy1")] == ["schedutil", "schedutil"]
    assert [e["event"] for e in sim.events][0] == "started" and sim.events[-1]["event"] == "restored"


def test_intel_pstate_is_pinned_with_min_max_and_util_is_frequency_invariant(tmp_path, state):
    intel_pstate_tree(tmp_path, ncpu=2, cur_khz=2350000)  # running at half of 4.7 GHz
    sim = Sim(tmp_path, 2, busy=[50, 100])
    seen = {}
    sim.hooks[2] = lambda: seen.update({p: (attr(tmp_path, p, "scaling_min_freq"),
                                            attr(tmp_path, p, "scaling_max_freq")) for p in ("policy0", "policy1")})
    res = sim.run(table_by_util(lambda u, q: 64 * (u + 1)), state)
    # util 0.5 x 0.5 x 1024 = 256 -> bucket 4 -> perf 320 -> 1.47 GHz -> 1.5 GHz (100 MHz steps)
    # util 1.0 x 0.5 x 1024 = 512 -> bucket 8 -> perf 576 -> 2.64 GHz -> 2.7 GHz
    assert seen == {"policy0": ("1500000", "1500000"), "policy1": ("2700000", "2700000")}
    assert res["residency"] == {"policy0": {1500000: 10}, "policy1": {2700000: 10}}
    assert res["policies"]["policy1"]["mode"] == "limits"
    for p in ("policy0", "policy1"):
        assert (attr(tmp_path, p, "scaling_min_freq"), attr(tmp_path, p, "scaling_max_freq")) == ("800000", "4700000")
        assert attr(tmp_path, p, "scaling_governor") == "powersave"  # never touched
    assert not state.exists()


def test_the_frequency_it_sets_feeds_back_into_utilisation(tmp_path, state):
    # The simulated kernel applies setspeed, so a busy CPU measured at 2.1 GHz
    # looks 60% utilised; each raise makes it look busier, up to the top.
    acpi_cpufreq_tree(tmp_path, ncpu=1, cur_khz=2100000)
    sim = Sim(tmp_path, 1, busy=[100], kernel=True)
    res = sim.run(table_by_util(lambda u, q: 64 * (u + 1)), state)
    assert [khz for _, khz in sim.sets()] == [2800000, 3500000, 3501000]
    assert res["residency"] == {"policy0": {2800000: 3, 3500000: 2, 3501000: 5}}


def test_queue_estimate_moves_the_choice(acpi, state):
    sim = Sim(acpi, 2, busy=[100, 100], procs_running=6)
    sim.hooks[4] = lambda: setattr(sim, "procs_running", 3)  # from period 5 on
    res = sim.run(table_by_util(lambda u, q: 1024 if q == 2 else 1), state)
    assert sim.sets() == [("policy0", 3501000), ("policy1", 3501000), ("policy0", 1400000), ("policy1", 1400000)]
    assert [e["nr_queued"] for e in sim.events if e["event"] == "set"] == [2, 2, 0, 0]
    assert res["residency"]["policy0"] == {3501000: 4, 1400000: 6} and res["writes"] == 4


def test_a_user_cap_stays_a_cap(acpi, state):
    set_attr(acpi, "policy0", "scaling_max_freq", 2800000)
    sim = Sim(acpi, 2, busy=[100, 100])
    res = sim.run(FreqTable.constant(1024), state)
    assert res["residency"]["policy0"] == {2800000: 10} and res["residency"]["policy1"] == {3501000: 10}


def test_a_previous_userspace_setspeed_is_put_back(acpi, state):
    for p in ("policy0", "policy1"):
        set_attr(acpi, p, "scaling_governor", "userspace")
        set_attr(acpi, p, "scaling_setspeed", 2100000)
    Sim(acpi, 2, busy=[100, 100]).run(FreqTable.constant(1024), state)
    for p in ("policy0", "policy1"):
        assert (attr(acpi, p, "scaling_governor"), attr(acpi, p, "scaling_setspeed")) == ("userspace", "2100000")


def test_the_state_is_saved_before_anything_changes(acpi, state, monkeypatch):
    real = sysfs.Cpufreq.set_governor
    checked = []

    def set_governor(self, policy, governor):
        d = json.loads(state.read_text())
        checked.append((policy, [p["governor"] for p in d["policies"]]))
        real(self, policy, governor)

    monkeypatch.setattr(sysfs.Cpufreq, "set_governor", set_governor)
    Sim(acpi, 2, busy=[0, 0]).run(FreqTable.constant(1), state, periods=2)
    assert checked[:2] == [("policy0", ["schedutil", "schedutil"]), ("policy1", ["schedutil", "schedutil"])]


# --------------------------------------------------------------------------- always restored

def test_ctrl_c_restores(acpi, state):
    sim = Sim(acpi, 2, busy=[100, 0])
    sim.hooks[3] = lambda: (_ for _ in ()).throw(KeyboardInterrupt())
    res = sim.run(FreqTable.constant(1024), state, periods=100)
    assert res["stopped"] == "sigint" and res["restored"] is True and res["periods"] == 2
    assert attr(acpi, "policy0", "scaling_governor") == "schedutil" and not state.exists()


def test_sigterm_restores_and_handlers_are_given_back(acpi, state):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    sim = Sim(acpi, 2, busy=[100, 0])
    sim.hooks[4] = lambda: os.kill(os.getpid(), signal.SIGTERM)
    res = sim.run(FreqTable.constant(1024), state, periods=100)
    assert res["stopped"] == "sigterm" and res["restored"] is True
    assert attr(acpi, "policy1", "scaling_governor") == "schedutil" and not state.exists()
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_exception_restores_then_propagates(acpi, state):
    sim = Sim(acpi, 2, busy=[100, 0])
    sim.hooks[2] = lambda: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        sim.run(FreqTable.constant(1024), state)
    assert [attr(acpi, p, "scaling_governor") for p in ("policy0", "policy1")] == ["schedutil", "schedutil"]
    assert sim.events[-1] == {"event": "restored", "restored": ["policy0: governor schedutil",
                                                                 "policy1: governor schedutil"], "errors": []}
    assert not state.exists()


def test_read_only_setspeed_halfway_restores_what_changed(acpi, state, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    make_read_only(acpi / CPUFREQ / "policy1/scaling_setspeed")
    sim = Sim(acpi, 2, busy=[100, 0])
    with pytest.raises(CpufreqError) as ei:
        sim.run(FreqTable.constant(1024), state)
    line = ei.value.one_line()
    assert line.startswith("policy1/scaling_setspeed is read-only") and "\n" not in line
    assert sim.sets() == [("policy0", 3501000)]  # policy0 had been driven already
    assert [attr(acpi, p, "scaling_governor") for p in ("policy0", "policy1")] == ["schedutil", "schedutil"]
    assert not state.exists()


def test_missing_setspeed_restores_and_says_which(acpi, state):
    (acpi / CPUFREQ / "policy1/scaling_setspeed").unlink()
    with pytest.raises(CpufreqError, match=r"policy1/scaling_setspeed does not exist"):
        Sim(acpi, 2, busy=[100, 0]).run(FreqTable.constant(1024), state)
    assert [attr(acpi, p, "scaling_governor") for p in ("policy0", "policy1")] == ["schedutil", "schedutil"]
    assert not state.exists()


def test_a_failed_restore_keeps_the_state_file_for_freq_restore(acpi, state, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    gov1 = acpi / CPUFREQ / "policy1/scaling_governor"
    sim = Sim(acpi, 2, busy=[100, 0])

    def break_then_fail():
        make_read_only(gov1)
        raise RuntimeError("boom")

    sim.hooks[2] = break_then_fail
    with pytest.raises(CpufreqError) as ei:
        sim.run(FreqTable.constant(1024), state)
    line = ei.value.one_line()
    assert line.startswith("RuntimeError: boom; restoring then failed too: policy1/scaling_governor is read-only")
    assert f"state kept in {state}" in line and "aios-lab freq restore" in line
    assert attr(acpi, "policy0", "scaling_governor") == "schedutil"  # the rest was put back
    assert state.exists()
    gov1.unlink()
    gov1.write_text("userspace\n")  # the operator fixes the cause, then:
    res = restore_saved(state)
    assert res["restored"] == ["policy1: governor schedutil"] and not state.exists()
    assert attr(acpi, "policy1", "scaling_governor") == "schedutil"


# --------------------------------------------------------------------------- SIGKILL and the state file

def test_restore_after_a_simulated_sigkill(acpi, state):
    # What a SIGKILLed governor leaves: userspace governors at its speeds, and its state file.
    for p in ("policy0", "policy1"):
        set_attr(acpi, p, "scaling_governor", "userspace")
        set_attr(acpi, p, "scaling_setspeed", 3501000)
    pid = dead_pid()
    write_state(state, acpi, [saved("policy0"), saved("policy1", governor="ondemand")], pid)
    res = restore_saved(state)
    assert res["pid"] == pid and res["restored"] == ["policy0: governor schedutil", "policy1: governor ondemand"]
    assert attr(acpi, "policy0", "scaling_governor") == "schedutil"
    assert attr(acpi, "policy1", "scaling_governor") == "ondemand"
    assert not state.exists()
    assert restore_saved(state) is None  # nothing left to do


def test_restore_after_a_simulated_sigkill_on_intel_pstate(tmp_path, state):
    intel_pstate_tree(tmp_path, ncpu=1)
    set_attr(tmp_path, "policy0", "scaling_min_freq", 2000000)  # pinned by the killed governor
    set_attr(tmp_path, "policy0", "scaling_max_freq", 2000000)
    write_state(state, tmp_path, [saved("policy0", mode="limits", governor="powersave", lo=800000, hi=4700000)],
                dead_pid())
    assert restore_saved(state)["restored"] == ["policy0: min/max 800000/4700000 kHz"]
    assert (attr(tmp_path, "policy0", "scaling_min_freq"), attr(tmp_path, "policy0", "scaling_max_freq")) == \
        ("800000", "4700000")


def test_a_stale_state_file_is_restored_at_the_next_start(acpi, state):
    set_attr(acpi, "policy0", "scaling_governor", "userspace")
    write_state(state, acpi, [saved("policy0", governor="powersave"), saved("policy1")], dead_pid())
    sim = Sim(acpi, 2, busy=[0, 0])
    res = sim.run(FreqTable.constant(1), state, periods=2)
    assert sim.events[0]["event"] == "stale_restored"
    assert sim.events[0]["restored"] == ["policy0: governor powersave"]
    # and this run saved (and put back) powersave as policy0's governor
    assert res["restored"] is True and attr(acpi, "policy0", "scaling_governor") == "powersave"


def test_a_live_governor_is_never_restored_under_it(acpi, state):
    child = subprocess.Popen(["sleep", "60"])
    try:
        write_state(state, acpi, [saved("policy0")], child.pid, gl._proc_start_time(child.pid))
        with pytest.raises(CpufreqError, match=rf"pid {child.pid}\) is still running") as ei:
            restore_saved(state)
        assert f"stop it (kill {child.pid})" in ei.value.one_line()
        with pytest.raises(CpufreqError, match=rf"another aios-lab frequency governor \(pid {child.pid}\)"):
            Sim(acpi, 2, busy=[0, 0]).run(FreqTable.constant(1), state)
        assert attr(acpi, "policy0", "scaling_governor") == "schedutil" and state.exists()
    finally:
        child.kill()
        child.wait()
    # Same pid number but another start time: a reused pid, so the owner is dead.
    write_state(state, acpi, [saved("policy0")], os.getppid(), "0")
    assert restore_saved(state)["restored"] == []


def test_a_corrupt_state_file_stops_everything(acpi, state):
    state.parent.mkdir(parents=True)
    state.write_text('{"format": "something else"}')
    with pytest.raises(CpufreqError, match="is not an aios-lab cpufreq state file") as ei:
        restore_saved(state)
    assert "put the settings back by hand" in ei.value.one_line()
    with pytest.raises(CpufreqError, match="is not an aios-lab cpufreq state file"):
        Sim(acpi, 2, busy=[0, 0]).run(FreqTable.constant(1), state)
    assert attr(acpi, "policy0", "scaling_governor") == "schedutil"


def test_no_cpufreq_changes_nothing(tmp_path, state):
    ProcStat(tmp_path, 1)
    with pytest.raises(CpufreqUnavailable):
        run_table_governor(FreqTable.constant(1), root=tmp_path, proc_root=tmp_path, state_file=state,
                           duration_s=1, sleep=lambda s: None)
    assert not state.exists()


def test_a_real_sigkill_leaves_a_state_file_that_restore_puts_back(acpi, state):
    ProcStat(acpi, 2)
    code = ("import sys; from aios_lab.dvfs.table import FreqTable; "
            "from aios_lab.cpufreq.governor_loop import run_table_governor; "
            "run_table_governor(FreqTable.constant(1024), root=sys.argv[1], proc_root=sys.argv[1], "
            "state_file=sys.argv[2], period_s=0.01)")
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.Popen([sys.executable, "-c", code, str(acpi), str(state)], env=env)
    try:
        deadline = time.monotonic() + 60  # a wait for the child, not a timing assertion
        while attr(acpi, "policy1", "scaling_setspeed") != "3501000":
            assert child.poll() is None, "the governor exited early"
            assert time.monotonic() < deadline, "the governor never set a frequency"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert attr(acpi, "policy0", "scaling_governor") == "userspace" and state.exists()
    assert gl.governor_state(state)["alive"] is False
    res = CliRunner().invoke(main, ["freq", "status", "--root", str(acpi)], env={"AIOS_LAB_FREQ_STATE": str(state)})
    assert f"a killed aios-lab governor (pid {child.pid}) left its settings in {state}" in res.output
    res = CliRunner().invoke(main, ["freq", "restore", "--state-file", str(state)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [f"restored the settings saved by pid {child.pid} ({state}):",
                                       "  policy0: governor schedutil", "  policy1: governor schedutil"]
    assert [attr(acpi, p, "scaling_governor") for p in ("policy0", "policy1")] == ["schedutil", "schedutil"]
    assert not state.exists()


def test_freq_restore_with_nothing_to_do(tmp_path):
    res = CliRunner().invoke(main, ["freq", "restore", "--state-file", str(tmp_path / "none.json")])
    assert res.exit_code == 0 and res.output == f"nothing to restore: no state file at {tmp_path / 'none.json'}\n"


def test_freq_restore_error_is_one_line(acpi, state):
    state.parent.mkdir(parents=True)
    state.write_text("{truncated")
    res = CliRunner().invoke(main, ["freq", "restore", "--state-file", str(state)])
    assert res.exit_code == 3 and res.output.startswith(f"Error: the saved cpufreq state {state} is not valid JSON")
    assert res.output.strip().count("\n") == 0
