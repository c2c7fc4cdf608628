"""The BPF telemetry collector against real workloads on the host kernel.

Each test runs processes whose scheduling we know (pinned spinners, forced
migrations, periodic sleepers, two spinners sharing a CPU) and checks what
bpf/telemetry.bpf.c + BpfCollector report about them. Nothing is mocked.
The host has 2 CPUs and may be busy with other work (a VM, builds), so time
tolerances are loose and counts are lower bounds where the kernel may add;
the test process reads the rings at real-time priority (tests/helpers/ring_reader.py) so
that other work cannot starve it into dropping records.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from aios_lab import paths
from aios_lab.bpf import Btf, check_ctypes_layout
from aios_lab.errors import PrivilegeError
from aios_lab.telemetry import schema
from aios_lab.telemetry.bpf_collector import BpfCollector, kernel_keeps_waits, object_path
from aios_lab.telemetry.topology import CpuTopology, parse_cpu_list
from tests.helpers.ring_reader import SUITE_NICE, prompt_reader

pytestmark = pytest.mark.bpf

INCLUDE = paths.project_root() / "bpf" / "include"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")
needs_2_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or
                                  not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1")

SPIN_CPU = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
SPIN_WALL = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {s}: pass\n"
SPIN_FOREVER = "while True: pass\n"


def spawn(code: str, cpu: int | None = None, nice: int | None = None) -> subprocess.Popen:
    """A child Python running `code`; nice, if given, is absolute (we are root),
    otherwise the suite's (it may run under `nice -n 19`), not the boosted
    reader's it forks from."""
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        os.setpriority(os.PRIO_PROCESS, 0, SUITE_NICE if nice is None else nice)
    return subprocess.Popen([sys.executable, "-c", code], preexec_fn=pin)


def our_nice() -> int:
    """The nice our children run at (spawn's default)."""
    return SUITE_NICE


def run_until_exit(col: BpfCollector, procs: list[subprocess.Popen]) -> dict[int, os.struct_rusage]:
    """Poll events while the children run; reap them; return pid -> the kernel's rusage."""
    usage: dict[int, os.struct_rusage] = {}
    while len(usage) < len(procs):
        col.poll(20)
        for p in procs:
            if p.pid in usage:
                continue
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                usage[pid] = ru
    col.poll(0)
    return usage


class Recorder:
    """A started collector plus everything it reported since the baseline."""

    def __init__(self, col: BpfCollector) -> None:
        self.col = col
        self.tasks: list[dict] = []
        self.cpus: list[dict] = []
        self.events: dict[str, list[dict]] = {"migrations": [], "wakeups": [], "switches": []}
        self.t = col.now_ns()
        col.snapshot(0, self.t)          # baseline: earlier activity is not ours
        col.take_events()

    def snap(self) -> None:
        self.col.poll(0)
        end = self.col.now_ns()
        s = self.col.snapshot(self.t, end)
        self.t = end
        self.tasks += s["task_intervals"].to_pylist()
        self.cpus += s["cpu_intervals"]
        for k, v in self.col.take_events().items():
            self.events[k] += v

    def task(self, pid: int) -> dict:
        rows = [r for r in self.tasks if r["pid"] == pid]
        assert rows, f"no task_intervals rows for pid {pid}"
        out = {k: sum(r[k] for r in rows) for k in ("oncpu_ns", "wait_ns", "wait_count", "wakeups",
                                                     "voluntary_switches", "involuntary_switches",
                                                     "migrations")}
        out["wait_hist"] = [sum(col) for col in zip(*(r["wait_hist"] for r in rows))]
        out["last"] = rows[-1]
        return out


@pytest.fixture
def rec():
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF")
    if not object_path().exists():
        pytest.fail(f"{object_path()} is not built: run `aios-lab build`")
    with prompt_reader(), BpfCollector() as col:
        yield Recorder(col)


@pytest.fixture
def srec():
    """A recorder with the per-switch event stream on."""
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF")
    with prompt_reader(), BpfCollector(switch_events=True) as col:
        yield Recorder(col)


def check_schema(rec: Recorder) -> None:
    """Every row has exactly the schema's columns, and pyarrow accepts the types."""
    for name, rows in (("task_intervals", rec.tasks), ("cpu_intervals", rec.cpus),
                       ("migrations", rec.events["migrations"]), ("wakeups", rec.events["wakeups"]),
                       ("switches", rec.events["switches"])):
        sch = schema.TABLES[name]
        for r in rows:
            assert list(r) == sch.names, name
        pa.Table.from_pylist(rows, schema=sch)


# -- switches the kernel does not trace --------------------------------------------------------
# This host's kernel never traces the switch-out of a few tasks that are not
# ours (host agent threads; bpf/telemetry.bpf.c, "Known blind spots"), and on
# a busy machine they switch often: CI saw 221 unpaired of 1,220 switches. So
# the tests do not bound how often that happens; they check, from the switch
# stream, that it never happens to their own tasks, that the collector's
# unpaired_switch counter is exactly the breaks in the stream, and they bound
# a task's on-CPU time by the share it may have run unseen.

def broken_links(sw: list[dict]) -> list[tuple[dict, dict]]:
    """Consecutive switches (a, b) on one CPU where a switched in a task that b
    does not switch out: the switch between them was not traced."""
    out = []
    last: dict[int, dict] = {}
    for r in sorted(sw, key=lambda r: r["ts_ns"]):
        a = last.get(r["cpu"])
        if a is not None and a["next_pid"] != r["prev_pid"]:
            out.append((a, r))
        last[r["cpu"]] = r
    return out


def unseen_run_ns(sw: list[dict], pid: int) -> int:
    """Upper bound on the time `pid` ran after an untraced switch-in: such a
    run is not credited to it (the CPU view keeps it), and it began somewhere
    between the last traced switch on that CPU and the one that switched it out."""
    return sum(b["ts_ns"] - a["ts_ns"] for a, b in broken_links(sw) if b["prev_pid"] == pid)


def check_voluntary(t: dict, usage: os.struct_rusage, at_least: float) -> None:
    """The task's voluntary switches are the kernel's own count (ru_nvcsw),
    plus at most its final switch-out as a zombie, which may come after the
    parent reaped it and read the rusage."""
    assert usage.ru_nvcsw <= t["voluntary_switches"] <= usage.ru_nvcsw + 1, (t["voluntary_switches"], usage)
    assert usage.ru_nvcsw >= at_least, usage


def check_wakeups(t: dict) -> None:
    """A task's wakeups are its first run plus the sleeps it ended: one per
    voluntary switch-out but its exit's, which may not have happened yet
    when a parent that reaped it reads the counters."""
    assert t["voluntary_switches"] <= t["wakeups"] <= t["voluntary_switches"] + 1, t


def check_unpaired(rec: "Recorder", pids: set[int]) -> None:
    """Our tasks never leave a CPU unseen, and unpaired_switch counts exactly
    the breaks in the switch stream (recorded since attach, none dropped).

    No clock margins: the BPF program counts a break before it reserves the
    record that shows it, so every break already drained was counted before
    the counter is read, and every break counted reaches the stream once
    that record is committed (a CPU may still be between the two when we
    read). The 1 ms clock margin this used instead holds only while no CPU
    stalls mid-program for longer, which a busy host's hypervisor does not
    promise: this machine's vCPUs are descheduled (steal time)."""
    rec.snap()
    drained = len(broken_links(rec.events["switches"]))
    lost = rec.col.lost()
    assert lost["switch_ring"] == 0, lost
    assert drained <= lost["unpaired_switch"], (lost, drained)
    deadline = time.monotonic() + 10    # a bound, not a wait: normally met at once
    while len(broken_links(rec.events["switches"])) < lost["unpaired_switch"] and time.monotonic() < deadline:
        rec.col.poll(20)
        rec.snap()
    broken = broken_links(rec.events["switches"])
    assert lost["unpaired_switch"] <= len(broken), (lost, len(broken))
    gone = [(a["next_pid"], a["next_comm"]) for a, _ in broken if a["next_pid"] in pids]
    assert not gone, f"our tasks left a CPU without a traced switch: {gone}"


@needs_root
@needs_2_cpus
def test_pinned_spinners_oncpu_time_and_last_cpu(srec):
    rec = srec
    spin_s = 0.4
    procs = [spawn(SPIN_CPU.format(s=spin_s), cpu=0), spawn(SPIN_CPU.format(s=spin_s), cpu=1)]
    cpu_s = {pid: ru.ru_utime + ru.ru_stime for pid, ru in run_until_exit(rec.col, procs).items()}
    rec.snap()
    for cpu, p in enumerate(procs):
        t = rec.task(p.pid)
        # The kernel's own accounting of the same process is the yardstick;
        # from below, less what it may have run after an untraced switch-in.
        unseen = unseen_run_ns(rec.events["switches"], p.pid)
        assert t["oncpu_ns"] <= 1.3e9 * cpu_s[p.pid], (t["oncpu_ns"], cpu_s[p.pid])
        assert t["oncpu_ns"] + unseen >= 0.7e9 * cpu_s[p.pid], (t["oncpu_ns"], unseen, cpu_s[p.pid])
        assert t["oncpu_ns"] + unseen >= 0.7 * spin_s * 1e9
        assert t["last"]["last_cpu"] == cpu
        assert t["last"]["tgid"] == p.pid and t["last"]["comm"].startswith("python")
        assert t["last"]["nice"] == our_nice()
    check_unpaired(rec, {p.pid for p in procs})
    check_schema(rec)


@needs_root
def test_exited_task_delivers_its_last_delta_once_then_is_forgotten(rec):
    p = spawn(SPIN_CPU.format(s=0.1))
    run_until_exit(rec.col, [p])
    key = p.pid.to_bytes(4, sys.byteorder)
    tasks = rec.col.obj.map("task_stats")
    deadline = time.monotonic() + 5
    # sched_process_free (the "final" mark) comes an RCU grace period after reaping.
    while tasks.lookup(key) is not None and time.monotonic() < deadline:
        rec.snap()
        time.sleep(0.02)
    assert tasks.lookup(key) is None, "exited task's entry was not harvested"
    before = rec.task(p.pid)
    rec.snap()
    assert rec.task(p.pid) == before, "a dead task must not report again"
    assert before["oncpu_ns"] >= 0.07e9


@needs_root
def test_weight_and_nice_as_the_kernel_keeps_them(rec):
    p = spawn(SPIN_CPU.format(s=0.05), nice=5)
    run_until_exit(rec.col, [p])
    rec.snap()
    last = rec.task(p.pid)["last"]
    assert last["nice"] == 5
    # sched_prio_to_weight[nice 5] = 335; 64-bit kernels keep it scaled by 2^10.
    assert last["weight"] in (335, 335 << 10)


@needs_root
@needs_2_cpus
def test_forced_migrations_are_reported_with_cpus(rec):
    n = 10
    p = spawn(SPIN_FOREVER, cpu=0)
    try:
        time.sleep(0.1)
        for i in range(n):
            os.sched_setaffinity(p.pid, {1 if i % 2 == 0 else 0})
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                rec.col.poll(10)
    finally:
        p.kill()
    run_until_exit(rec.col, [p])
    rec.snap()
    mine = [e for e in rec.events["migrations"] if e["pid"] == p.pid]
    assert len(mine) >= n
    pairs = [(e["src_cpu"], e["dst_cpu"]) for e in mine]
    assert pairs.count((0, 1)) >= n // 2 and pairs.count((1, 0)) >= n // 2, pairs
    assert all(s != d for s, d in pairs)
    nr = [e["nr_migrations"] for e in mine]
    assert nr == sorted(nr) and len(set(nr)) == len(nr)
    topo = rec.col.topology
    for e in mine:
        assert e["same_llc"] == topo.same_llc(e["src_cpu"], e["dst_cpu"])
        assert e["same_node"] == topo.same_node(e["src_cpu"], e["dst_cpu"])
        assert e["dst_nr_running"] is None or e["dst_nr_running"] >= 0
    # The interval table counts the same tracepoint hits as the event stream.
    assert rec.task(p.pid)["migrations"] == len(mine)
    check_schema(rec)


@needs_root
def test_sleeper_wakeups_voluntary_switches_and_wait_histogram(rec):
    n = 50
    p = spawn(f"import time\nfor _ in range({n}): time.sleep(0.01)\n")
    usage = run_until_exit(rec.col, [p])
    rec.snap()
    t = rec.task(p.pid)
    # A sleep whose timer fires before schedule() (the vCPU descheduled in
    # between, on a busy host) neither switches nor counts as a wakeup:
    # the kernel's own count of voluntary switches is the yardstick, and the
    # wakeups are the sleeps ended (all voluntary switch-outs but the exit)
    # plus the first run.
    check_voluntary(t, usage[p.pid], at_least=0.9 * n)
    check_wakeups(t)
    assert t["wait_count"] >= n and sum(t["wait_hist"]) == t["wait_count"]
    # Each sleep ends with a wakeup that preempts (an idle CPU's idle task),
    # after which __schedule skips its clock update: the kernel's sched_info
    # reads such waits as 0 (CI once saw all 51 so), the collector must not.
    assert len(t["wait_hist"]) == schema.WAIT_HIST_BUCKETS and t["wait_ns"] > 0
    assert t["wait_hist"][0] <= 0.2 * t["wait_count"], t["wait_hist"]
    rows = [r for r in rec.tasks if r["pid"] == p.pid and r["wait_count"]]
    assert all(r["wait_p50_ns"] <= r["wait_p99_ns"] for r in rows)
    # The interval's max lies at or above the p99 bucket's lower bound.
    assert all(r["wait_max_ns"] >= r["wait_p99_ns"] // 2 for r in rows)
    wakes = [e for e in rec.events["wakeups"] if e["pid"] == p.pid]
    assert len(wakes) >= n
    online = set(rec.col.topology.cpus)
    assert all(e["target_cpu"] in online and e["waker_cpu"] in online for e in wakes)
    assert all(e["since_last_ran_ns"] is None or e["since_last_ran_ns"] >= 0 for e in wakes)
    check_schema(rec)


@needs_root
@needs_2_cpus
def test_two_spinners_on_one_cpu_wait_and_preempt(rec):
    wall = 0.5
    t0 = time.monotonic()
    procs = [spawn(SPIN_WALL.format(s=wall), cpu=1) for _ in range(2)]
    run_until_exit(rec.col, procs)
    elapsed = time.monotonic() - t0
    rec.snap()
    total = 0
    for p in procs:
        t = rec.task(p.pid)
        assert t["involuntary_switches"] > 0
        assert t["wait_ns"] > 0 and t["wait_count"] > 0
        assert t["last"]["last_cpu"] == 1
        total += t["oncpu_ns"]
    # They shared one CPU: together at most the wall time (plus startup elsewhere).
    assert total <= 1.1 * elapsed * 1e9
    cpu1 = [r for r in rec.cpus if r["cpu"] == 1 and r["rq_len_max"] is not None]
    assert max(r["rq_len_max"] for r in cpu1) >= 2


@needs_root
def test_cpu_busy_plus_idle_covers_the_interval(srec):
    rec = srec
    # A CPU's clock is known from its first context switch after attach; an
    # idle tickless CPU may not switch for a long time, so visit each one.
    mask = os.sched_getaffinity(0)
    for cpu in rec.col.topology.cpus:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.002)
    os.sched_setaffinity(0, mask)
    rec.snap()
    rec.tasks.clear()
    rec.cpus.clear()
    start = rec.t
    unpaired_before = rec.col.lost()["unpaired_switch"]
    procs = [spawn(SPIN_CPU.format(s=0.2))]
    run_until_exit(rec.col, procs)
    time.sleep(0.2)
    rec.snap()
    span = rec.t - start
    # An unpaired switch (seen on this host's kernel: a task switched in with
    # no switch-out) ends a stretch uncredited, so coverage can only be
    # checked from below when none happened in the window.
    exact = rec.col.lost()["unpaired_switch"] == unpaired_before
    for cpu in rec.col.topology.cpus:
        rows = [r for r in rec.cpus if r["cpu"] == cpu]
        covered = sum(r["busy_ns"] + r["idle_ns"] for r in rows)
        assert covered / span <= 1.1, (cpu, covered, span)
        if exact:
            assert covered / span >= 0.9, (cpu, covered, span)
        assert sum(r["switches"] for r in rows) > 0
    # Busy time is the on-CPU time of tasks (pid > 0): the two views agree.
    # A hidden switch-in (the unpaired case) leaves that whole run out of the
    # task view while the CPU view, which follows the tracepoint's prev, keeps
    # it; CI once lost the 200 ms spinner that way. So from below the task
    # view is short by at most the time tasks may have run unseen in the window.
    busy = sum(r["busy_ns"] for r in rec.cpus)
    oncpu = sum(r["oncpu_ns"] for r in rec.tasks)
    lost = rec.col.lost()
    unseen = sum(b["ts_ns"] - max(a["ts_ns"], start) for a, b in broken_links(rec.events["switches"])
                 if b["prev_pid"] and b["ts_ns"] > start)
    assert oncpu / busy <= 1.1, (oncpu, busy, lost)
    assert (oncpu + unseen) / busy >= 0.9, (oncpu, unseen, busy, lost)
    check_unpaired(rec, {p.pid for p in procs})
    check_schema(rec)


@needs_root
def test_nothing_lost_at_normal_rates(srec):
    rec = srec
    procs = [spawn("import time\nfor _ in range(200): time.sleep(0.001)\n"),
             spawn(SPIN_CPU.format(s=0.2))]
    usage = run_until_exit(rec.col, procs)
    rec.snap()
    assert rec.events["wakeups"], "wakeup events were expected"
    lost = rec.col.lost()
    assert set(lost) == {"migration_ring", "wakeup_ring", "task_map_full", "unpaired_switch",
                         "switch_ring"}
    assert lost["migration_ring"] == lost["wakeup_ring"] == lost["task_map_full"] == 0, lost
    assert lost["switch_ring"] == 0, lost
    # Unpaired switches are a kernel property, not a rate problem: our 6.18
    # host does not trace some tasks' switch-outs, as often as those tasks
    # run (other work decides). None may be ours, and the counter must be
    # exactly the breaks in the recorded stream.
    # The sleeper's every wakeup, and its voluntary switches as the kernel
    # counts them: a sleep whose timer fires before schedule() (the vCPU
    # descheduled in between, on a busy host) wakes it without a switch.
    sleeper = rec.task(procs[0].pid)
    check_voluntary(sleeper, usage[procs[0].pid], at_least=0.9 * 200)
    check_wakeups(sleeper)
    check_unpaired(rec, {p.pid for p in procs})


def run_until_exit_unreaped(cols: list[BpfCollector], procs: list[subprocess.Popen]) -> dict[int, tuple[int, ...]]:
    """Poll while the children run; once each has exited, and before it is
    reaped, read the kernel's /proc/PID/schedstat (on-CPU ns, run-queue wait
    ns, timeslices): after exit a task waits no more, so these are its final
    totals. Returns pid -> those three numbers; the children are reaped."""
    final: dict[int, tuple[int, ...]] = {}
    while len(final) < len(procs):
        for c in cols:
            c.poll(20)
        for p in procs:
            if p.pid not in final and os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                final[p.pid] = tuple(int(v) for v in Path(f"/proc/{p.pid}/schedstat").read_text().split())
    for p in procs:
        p.wait()
    for c in cols:
        c.poll(0)
    return final


@needs_root
@needs_2_cpus
def test_waits_are_the_kernels_run_delay_from_either_source():
    """Where the kernel keeps sched_info, the collector takes each wait from
    it at the switch-in: a task's waits then sum to the run_delay the kernel
    reports for it plus what the kernel counts as 0 (a wait whose switch
    found the rq clock stale, the update skipped after a preempting wakeup:
    timed by ktime instead), and never to more than the task's life less its
    time on CPU (waits and runs are disjoint). The wakeup-hook path (kernels
    without sched_info), attached beside it over the same tasks, times the
    same waits from the wakeup tracepoint: about the same count, and not
    more in total (it starts each wait at the wakeup, just after the
    enqueue, and may miss one)."""
    if not kernel_keeps_waits():
        pytest.skip("this kernel has no task_struct.sched_info (CONFIG_SCHED_INFO)")
    with prompt_reader(), BpfCollector(kernel_waits=True) as kcol, \
            BpfCollector(kernel_waits=False, wakeup_events=False) as hcol:
        assert kcol.kernel_waits and not hcol.kernel_waits
        krec, hrec = Recorder(kcol), Recorder(hcol)
        born = time.monotonic_ns()
        procs = [spawn(SPIN_WALL.format(s=0.4), cpu=1), spawn(SPIN_WALL.format(s=0.4), cpu=1),
                 spawn("import time\nfor _ in range(100): time.sleep(0.002)\n", cpu=0)]
        final = run_until_exit_unreaped([kcol, hcol], procs)
        lived = time.monotonic_ns() - born   # at least each child's life
        krec.snap()
        hrec.snap()
    for p in procs:
        run_delay = final[p.pid][1]
        k, h = krec.task(p.pid), hrec.task(p.pid)
        assert run_delay > 0, final[p.pid]
        assert run_delay <= k["wait_ns"] <= lived - k["oncpu_ns"], (p.pid, k, run_delay, lived)
        # The hook path can miss a wait in a race (a wakeup seen while the
        # task is still on its CPU): seen about once in 16 runs of this test.
        assert abs(k["wait_count"] - h["wait_count"]) <= 1 + 0.02 * k["wait_count"], \
            (p.pid, k["wait_count"], h["wait_count"])
        # and then its total falls short by that wait (CI once: 1.2 ms of
        # 3.4); it never exceeds the sched_info path's.
        assert h["wait_ns"] <= 1.05 * k["wait_ns"] + 2_000_000, (p.pid, h["wait_ns"], k["wait_ns"])
        # (the two read their maps one after the other: an exit's last
        # switch-out may fall between)
        assert abs(k["wakeups"] - h["wakeups"]) <= 1, (k, h)
        assert abs(k["voluntary_switches"] - h["voluntary_switches"]) <= 1, (k, h)
    for p in procs:
        check_wakeups(krec.task(p.pid))
    assert krec.task(procs[2].pid)["wakeups"] >= 0.9 * 100
    # The sleeper's waits follow wakeups that preempt the idle task: a stale
    # rq clock at its switch-ins, which both paths time by ktime (before
    # they did, the hook path read 0 for 18-21 of 51 such waits, now 0-1).
    for r in (krec.task(procs[2].pid), hrec.task(procs[2].pid)):
        assert r["wait_hist"][0] <= 0.2 * r["wait_count"], r["wait_hist"]


@needs_root
def test_wakeup_events_can_be_turned_off():
    with prompt_reader(), BpfCollector(wakeup_events=False, ringbuf_pages=16) as col:
        rec = Recorder(col)
        p = spawn("import time\nfor _ in range(20): time.sleep(0.005)\n")
        run_until_exit(col, [p])
        rec.snap()
        assert not rec.events["wakeups"]
        t = rec.task(p.pid)
        check_wakeups(t)          # still counted in the map
        assert t["wakeups"] >= 0.9 * 20


@needs_root
def test_switch_events_are_off_unless_asked(rec):
    run_until_exit(rec.col, [spawn("import time\nfor _ in range(20): time.sleep(0.002)\n")])
    rec.snap()
    assert rec.events["switches"] == []


@needs_root
@needs_2_cpus
def test_switch_stream_sleeper_and_preempted_spinners(srec):
    """A pinned sleeper leaves its CPU as S (ftrace state 1) once per sleep;
    two spinners sharing a CPU leave it still runnable (R, 0); the waits the
    stream carries are the same waits the per-task aggregates count."""
    sleeper = spawn("import time\nfor _ in range(100): time.sleep(0.002)\n", cpu=1)
    # CPU-time spinners: each is preempted about once per slice it runs, however
    # little of the CPU it gets (wall-time ones at nice 19 beside a nice-0 hog
    # ran ~4 slices in their 0.3 s: 3 preemptions).
    spinners = [spawn(SPIN_CPU.format(s=0.15), cpu=0), spawn(SPIN_CPU.format(s=0.15), cpu=0)]
    usage = run_until_exit(srec.col, [sleeper, *spinners])
    srec.snap()
    sw = srec.events["switches"]
    assert srec.col.lost()["switch_ring"] == 0
    outs = [r for r in sw if r["prev_pid"] == sleeper.pid]
    sleeps = [r for r in outs if r["prev_state"] == 1]
    # Not one per sleep: a timer that fires before schedule() (the vCPU
    # stalled in between: seen as 99 of 100 under stress-ng) does not switch.
    # The kernel's own count of voluntary switches is the yardstick, and
    # the stream's voluntary switch-outs are the aggregate's.
    check_voluntary(srec.task(sleeper.pid), usage[sleeper.pid], at_least=0.9 * 100)
    assert sum(r["prev_state"] not in (0, 0x100) for r in outs) == srec.task(sleeper.pid)["voluntary_switches"]
    assert len(sleeps) >= 0.9 * 100 and all(r["cpu"] == 1 for r in sleeps)
    ins = [r for r in sw if r["next_pid"] == sleeper.pid]
    assert ins and all(r["next_comm"] == "python3" or r["next_comm"].startswith("python")
                       for r in ins[-50:])
    # Forked from the real-time reader, the child runs at nice 0 (reset on
    # fork) until it sets the suite's nice before exec; after that, every
    # switch-in carries the new priority.
    prios = [r["next_prio"] for r in ins]
    ours = prios.index(120 + our_nice())
    assert set(prios[:ours]) <= {120} and set(prios[ours:]) == {120 + our_nice()}, prios
    for p in spinners:
        # Still runnable when switched out: R (0) after a tick preemption
        # taken on the way back to user space, R+ (256) in kernel.
        out = [r["prev_state"] for r in sw if r["prev_pid"] == p.pid]
        assert sum(s in (0, 256) for s in out) >= 5, f"spinner {p.pid}: {out[:20]}"
    # Per CPU the stream is a chain: who comes in is who leaves next. It
    # breaks only where the kernel did not trace a switch, never at ours, and
    # each break is one the BPF side counted.
    check_unpaired(srec, {sleeper.pid, *(p.pid for p in spinners)})
    sw = srec.events["switches"]
    broken = broken_links(sw)
    for p in (sleeper, *spinners):
        # Every traced switch-in of ours has its switch-out; a switch-out
        # without one is a break (someone else's switch-out hidden before it).
        ins = sum(r["next_pid"] == p.pid for r in sw)
        outs = sum(r["prev_pid"] == p.pid for r in sw)
        assert outs - ins == sum(b["prev_pid"] == p.pid for _, b in broken), (p.pid, ins, outs)
    # Each CPU's switches reach the ring in the order they happened (a CPU's
    # programs do not interleave), and their times, taken from the rq clock
    # with a per-CPU offset to ktime, never go back, resyncs included.
    for cpu in {r["cpu"] for r in sw}:
        ts = [r["ts_ns"] for r in sw if r["cpu"] == cpu]
        assert all(a < b for a, b in zip(ts, ts[1:])), cpu
    # Exact waits in the stream == the aggregate the task map kept, but for
    # the waits that ended at a switch-in the kernel did not trace: the map
    # counts those at the next switch-out (from run_delay), the stream has no
    # record to carry them; at most one per such switch-in.
    for p in (sleeper, *spinners):
        waits = [r["next_wait_ns"] for r in sw if r["next_pid"] == p.pid and r["next_wait_ns"] is not None]
        t = srec.task(p.pid)
        hidden = sum(r["prev_pid"] == p.pid for r in sw) - sum(r["next_pid"] == p.pid for r in sw)
        assert len(waits) <= t["wait_count"] <= len(waits) + hidden, (p.pid, len(waits), t["wait_count"], hidden)
        assert sum(waits) <= t["wait_ns"], p.pid
        if t["wait_count"] == len(waits):
            assert sum(waits) == t["wait_ns"], p.pid
    check_schema(srec)


def test_start_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError):
        BpfCollector().start()


def test_ringbuf_pages_must_be_a_power_of_two():
    with pytest.raises(ValueError):
        BpfCollector(ringbuf_pages=3)


# -- layouts: BTF mirror vs the host C compiler -------------------------------------------------

STRUCTS = ["aios_task_stats", "aios_cpu_stats", "aios_migration_event", "aios_wakeup_event",
           "aios_switch_event"]


def _c_facts(tmp_path: Path, exprs: list[str]) -> list[int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a host C compiler is needed for the layout check"
    body = "\n".join(f'    printf("%lld\\n", (long long)({e}));' for e in exprs)
    src = tmp_path / "facts.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "aios/telemetry.h"\n'
                   f"int main(void) {{\n{body}\n    return 0;\n}}\n")
    exe = tmp_path / "facts"
    subprocess.run([cc, f"-I{INCLUDE}", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("name", STRUCTS)
def test_record_layouts_match_the_c_header(name, tmp_path):
    assert object_path().exists(), "run `aios-lab build`"
    with Btf.parse(object_path()) as btf:
        layout = btf.struct(name)
        ctype = btf.ctypes_type(name)
    check_ctypes_layout(ctype, layout)
    names = [m.name for m in layout.members]
    facts = _c_facts(tmp_path, [f"sizeof(struct {name})"] +
                     [f"offsetof(struct {name}, {n})" for n in names])
    assert facts[0] == ctypes.sizeof(ctype) == layout.size
    assert facts[1:] == [getattr(ctype, n).offset for n in names]


def test_enums_and_constants_match_the_c_header(tmp_path):
    with Btf.parse(object_path()) as btf:
        enums = {**btf.enum("aios_telemetry_drop"), **btf.enum("aios_task_flag")}
        hist = btf.struct("aios_task_stats").member("wait_hist")
    assert _c_facts(tmp_path, list(enums) + ["AIOS_WAIT_HIST_BUCKETS"]) == \
        list(enums.values()) + [schema.WAIT_HIST_BUCKETS]
    assert hist.size == 4 * schema.WAIT_HIST_BUCKETS


# -- topology from a fake sysfs tree -------------------------------------------------------------

def _write(root: Path, rel: str, text: str) -> None:
    f = root / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text + "\n")


def test_topology_from_a_fake_sysfs(tmp_path):
    cpu = "sys/devices/system/cpu"
    _write(tmp_path, f"{cpu}/online", "0-3")
    for c in range(4):
        llc = "0-1" if c < 2 else "2-3"
        _write(tmp_path, f"{cpu}/cpu{c}/cache/index0/level", "1")
        _write(tmp_path, f"{cpu}/cpu{c}/cache/index0/type", "Data")
        _write(tmp_path, f"{cpu}/cpu{c}/cache/index0/shared_cpu_list", str(c))
        _write(tmp_path, f"{cpu}/cpu{c}/cache/index3/level", "3")
        _write(tmp_path, f"{cpu}/cpu{c}/cache/index3/type", "Unified")
        _write(tmp_path, f"{cpu}/cpu{c}/cache/index3/shared_cpu_list", llc)
        _write(tmp_path, f"{cpu}/cpu{c}/topology/thread_siblings_list", str(c))
    _write(tmp_path, "sys/devices/system/node/node0/cpulist", "0-1")
    _write(tmp_path, "sys/devices/system/node/node1/cpulist", "2-3")
    topo = CpuTopology.read(tmp_path)
    assert topo.cpus == [0, 1, 2, 3] and topo.llc_level == 3
    assert topo.same_llc(0, 1) and not topo.same_llc(1, 2)
    assert topo.same_node(2, 3) and not topo.same_node(0, 3)
    assert topo.same_llc(0, 7) is None                    # unknown CPU: no guess
    d = topo.describe()
    assert d["nr_llcs"] == 2 and d["nr_nodes"] == 2 and d["cpus"][2] == \
        {"cpu": 2, "llc": 2, "node": 1, "core": 2}


def test_topology_without_cache_or_node_info_says_unknown(tmp_path):
    _write(tmp_path, "sys/devices/system/cpu/online", "0,2")
    topo = CpuTopology.read(tmp_path)
    assert topo.cpus == [0, 2]
    assert topo.same_llc(0, 2) is None and topo.same_node(0, 2) is None
    assert parse_cpu_list("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]


def test_topology_of_this_machine_covers_online_cpus():
    topo = CpuTopology.read()
    online = Path("/sys/devices/system/cpu/online").read_text()
    assert topo.cpus == parse_cpu_list(online)
    for c in topo.cpus:
        assert topo.same_llc(c, c) in (True, None)


STALL_NS = 10_000_000


@needs_root
@needs_2_cpus
def test_streams_sampled_by_whole_windows_with_weights_and_exact_aggregates():
    """With a budget far below the event rate, the switch and wakeup streams
    keep whole 2^24 ns windows per CPU, each row weighted by a power of two;
    cpu_intervals says how many rows each CPU kept; the task and CPU
    aggregates still count every event."""
    n = 1000
    with prompt_reader(), BpfCollector(switch_events=True, stream_budget=100) as col:  # 1 record per window
        rec = Recorder(col)
        # The baseline read of the counters (not in rec.cpus) lies between these.
        before, after = rec.t, col.now_ns()
        sleeper = spawn(f"import time\nfor _ in range({n}): time.sleep(0.0002)\n", cpu=1)
        usage = None
        while usage is None:
            col.poll(20)
            pid, _, ru = os.wait4(sleeper.pid, os.WNOHANG)
            usage = ru if pid else None
        rec.snap()
        end = rec.t
        rec.snap()                      # rows recorded before `end` are all drained now
    sw, wk = rec.events["switches"], rec.events["wakeups"]
    t = rec.task(sleeper.pid)
    # The aggregates see every event: the kernel's own count (a sleep whose
    # timer fires before schedule() does not switch).
    check_voluntary(t, usage, at_least=0.9 * n)
    assert t["wakeups"] >= 0.9 * n
    for rows, cpu_key, kept, seen in ((sw, "cpu", "switch_records", "switches"),
                                      (wk, "waker_cpu", "wakeup_records", "wakeup_events")):
        weights = {r["sample_weight"] for r in rows}
        assert all(w >= 1 and w & (w - 1) == 0 for w in weights), weights
        # Sampled: some windows were left out (whether a weighted window was
        # drawn at all is chance: at 1 in 32, often none in 0.3 s).
        assert sum(r[kept] for r in rec.cpus) < sum(r[seen] for r in rec.cpus), kept
        for cpu in col.topology.cpus:
            cpu_rows = [r for r in rows if r[cpu_key] == cpu]
            counted = sum(r[kept] for r in rec.cpus if r["cpu"] == cpu)
            # Margins: a program may still be running on the other CPU at a
            # read, and a row's time is the rq clock's last update (ttwu's,
            # __schedule's), which a vCPU the hypervisor stalls in between can
            # leave milliseconds before the program counts the row (under
            # stress-ng, 2 of 23 runs of the tier with a 1 ms margin).
            surely = sum(after + STALL_NS <= r["ts_ns"] < end - STALL_NS for r in cpu_rows)
            maybe = sum(r["ts_ns"] >= before - STALL_NS for r in cpu_rows)
            assert surely <= counted <= maybe, (kept, cpu, surely, counted, maybe)
            assert counted <= sum(r[seen] for r in rec.cpus if r["cpu"] == cpu)
            by_window: dict[int, list[dict]] = {}
            for r in cpu_rows:
                by_window.setdefault(r["ts_ns"] >> 24, []).append(r)
            assert all(len({r["sample_weight"] for r in w}) == 1 for w in by_window.values()), cpu
    # Within a recorded window a CPU's chain is whole: each switch-in of the
    # sleeper is followed by its switch-out, unless the window ended first.
    for w in {r["ts_ns"] >> 24 for r in sw if r["cpu"] == 1}:
        rows = sorted((r for r in sw if r["cpu"] == 1 and r["ts_ns"] >> 24 == w), key=lambda r: r["ts_ns"])
        for a, b in zip(rows, rows[1:]):
            if a["next_pid"] == sleeper.pid:
                assert b["prev_pid"] == sleeper.pid, (a, b)
    check_schema(rec)
