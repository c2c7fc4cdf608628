"""freq for real inside the VM: the policy loads and passes the verifier,
the table pushed into its map decides what each CPU asks for, a hot swap
changes the requests and the version, a malformed table never gets near the
kernel, and detaching leaves sched_ext disabled.

The guest has no cpufreq driver (no frequency hardware to drive), so
scx_bpf_cpuperf_set() changes no real frequency here: schedutil is not
running and nothing reads the target. What these tests check is what the
policy asks for, from its per-CPU `cpu_state` map: the utilisation and
queue it measured, the table entry it looked up, and the request it passed
to the kernel, against aios_lab.dvfs.table's own lookup and headroom.

No pandas or scikit-learn here: numpy is the heaviest import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from aios_lab.sched import policy, sched_ext
from aios_lab.sched.deploy_loop import DeployLoop
from aios_lab.sched.kinds.freq_table import FreqRun
from aios_lab.dvfs.table import (RQ_BUCKETS, UTIL_BUCKETS, FreqTable, cpuperf_request, rq_bucket, save_table,
                                 util_bucket)
from aios_lab.errors import ModelError

from .conftest import ROOT, wait_for

pytestmark = pytest.mark.guest

NCPU = os.cpu_count() or 1


def _graded(version: int) -> FreqTable:
    """Every (util bucket, queue bucket) has its own perf level, 1 mod 16,
    so a request names the bucket it came from."""
    u, r = np.meshgrid(np.arange(UTIL_BUCKETS), np.arange(RQ_BUCKETS), indexing="ij")
    return FreqTable(64 * u + 16 * r + 1, method="test-graded", version=version)


def _flat(perf: int, version: int) -> FreqTable:
    t = FreqTable.constant(perf, method="test-flat")
    t.version = version
    return t


def _spin_script(n: int, until: Path | None = None, seconds: float = 300) -> str:
    """A shell command running n CPU-bound shells until the file `until`
    exists (or for `seconds`), then exiting 0."""
    start = (f"pids=; for i in $(seq {n}); do timeout {seconds} sh -c 'while :; do :; done' & "
             f"pids=\"$pids $!\"; done; ")
    if until is None:
        return start + "wait; exit 0"
    return start + f"while [ ! -e {until} ]; do sleep 0.2; done; kill $pids 2>/dev/null; wait; exit 0"


@contextmanager
def _spinners(n: int):
    """n CPU-bound shells while the block runs (more than the CPUs, so queues
    form). Stopped through a flag file: `timeout` puts each in its own process
    group, out of reach of a signal to ours."""
    with tempfile.TemporaryDirectory() as d:
        flag = Path(d) / "stop"
        proc = subprocess.Popen(["sh", "-c", _spin_script(n, until=flag)])
        try:
            yield proc
        finally:
            flag.touch()
            proc.wait(timeout=120)


def _check_requests(states, table: FreqTable) -> list:
    """Every CPU that decided under `table` asked for cpuperf_request(lookup)."""
    used = [s for s in states if s.table_version == table.version]
    for s in used:
        assert s.consistent, s
        assert 0 <= s.util <= 1024 and s.util_bucket == util_bucket(s.util), s
        assert s.util_win <= s.util, s  # util_est only ever raises it
        assert s.rq_bucket == rq_bucket(s.nr_queued), s
        assert s.perf == table.lookup(s.util, s.nr_queued), s
        assert s.request == cpuperf_request(s.perf, s.perf_cap), s
        assert 1 <= s.perf_cur <= 1024 and 1 <= s.perf_cap <= 1024, s
    return used


def test_the_table_in_the_map_decides_each_cpus_request():
    table = _graded(version=7)
    with FreqRun(policy=policy.get("freq"), table=table, source="graded") as run:
        assert sched_ext.read_state().ops == "freq"
        assert run.active_version() == 7 and run.slots.read_ctl()["swaps"] == 1
        with _spinners(2 * NCPU):
            time.sleep(4)
            states = run.states()
        # Then ~200 ms of idle (25 windows): no tick reaches an idle CPU, so
        # only the window timer can decay its utilisation and re-apply the
        # table, as the simulator decays every CPU every window.
        time.sleep(0.2)
        idle = run.states()
        # Then a light load: short runs between 50 ms sleeps. Each task
        # start decides again, and the idle windows decay the utilisation.
        subprocess.run(["sh", "-c", "for i in $(seq 40); do sleep 0.05; done"], check=True, timeout=300)
        light = run.states()
        stats = run.dep.read_stats()
    assert sched_ext.read_state().state == "disabled"
    assert stats["TICK_SET"] > 0 and stats["RUNNING_SET"] > 0, stats
    assert stats["NO_TABLE"] == 0 and stats["CLAMPED"] == 0, stats
    assert stats["IDLE_DECAY"] > 0, stats
    used = _check_requests(states, table)
    assert len(used) == NCPU, states  # every CPU ran spinners and decided
    assert max(s.util for s in used) >= 512, states  # the load was measured
    assert any(s.nr_queued > 0 for s in used), states  # and so were the queues
    # After the idle gap the windowed utilisation of every CPU with nothing
    # running has decayed to the lowest bucket ((3/4)^25 of 1024 rounds to
    # 0). A CPU running a task when read (this test's own reader, a kworker)
    # decided last on that task's busy time, which may be past 64 under TCG
    # (seen: 86). A resting CPU that last decided on the EWMA alone asks for
    # the table's value for that state, not what the spinners left. One that
    # last decided while running a short task used util_est instead, which
    # still remembers the spinners: the CPUs ran out of work when they were
    # killed, and each short run since pulls it down by only 1/4.
    assert len(_check_requests(idle, table)) == NCPU, idle
    resting = [s for s in idle if not s.running]
    assert resting, idle
    assert all(s.util_win < 64 for s in resting), idle
    decayed = [s for s in resting if s.util == s.util_win]
    assert decayed, idle
    assert all(s.util_bucket == 0 and s.request < min(u.request for u in used) for s in decayed), (states, idle)
    assert max(s.util_est for s in idle) >= 256, idle
    assert len(_check_requests(light, table)) == NCPU, light
    assert min(s.util_win for s in light) < min(s.util_win for s in used), (states, light)  # and its decay
    print("\nper-CPU state under load:", [s.to_dict() for s in states])
    print("per-CPU state after 200 ms idle:", [s.to_dict() for s in idle])
    print("per-CPU state after a light load:", [s.to_dict() for s in light])


def test_without_a_table_perf_is_left_alone():
    with FreqRun(policy=policy.get("freq")) as run:
        with _spinners(NCPU):
            time.sleep(2)
            states = run.states()
        stats = run.dep.read_stats()
    assert stats["NO_TABLE"] > 0 and stats["TICK_SET"] == 0 and stats["RUNNING_SET"] == 0, stats
    assert all(s.request == 0 and s.table_version == 0 for s in states), states
    assert any(s.updates > 0 for s in states)


def test_hot_swap_changes_the_requests_and_the_version(tmp_path):
    a, b = _graded(version=1), _flat(1000, version=2)
    path = save_table(tmp_path / "a.json", a)
    flag = tmp_path / "done"
    loop = DeployLoop(policy.get("freq"), {}, model_path=str(path),
                      command=["sh", "-c", _spin_script(2 * NCPU, until=flag)])
    seen: dict = {"stats": 0}

    def on_event(e: dict) -> None:
        if e["event"] != "stats":
            return
        seen["stats"] += 1
        if seen["stats"] == 2:
            seen["before"] = loop.model.run.states()
            seen["swap"] = loop.swap(b, source="flat")
        elif seen["stats"] == 4:
            seen["after"] = loop.model.run.states()
            seen["ctl"] = loop.model.run.slots.read_ctl()
            flag.touch()  # the load ends, and with it the deployment

    try:
        res = loop.run(duration_s=300, interval_s=1.0, on_event=on_event)
    finally:
        flag.touch()
    assert res.ejected is None and res.command_exit == 0, res
    assert sched_ext.read_state().state == "disabled"
    assert _check_requests(seen["before"], a), seen["before"]
    after = _check_requests(seen["after"], b)
    assert after, seen["after"]
    # 1000 is never a graded level, and 800 = ceil(1000 / 1.25) never a graded request
    assert all(s.perf == 1000 and s.request == 800 for s in after)
    assert {s.table_version for s in seen["after"]} <= {1, 2}
    assert seen["ctl"] == {"active": 0, "version": 2, "swaps": 2}, seen["ctl"]
    assert [s["version"] for s in res.model["table_swaps"]] == [1, 2]


def test_bad_tables_never_reach_the_map():
    good = _graded(version=3)
    wrong_shape = _graded(version=4)
    wrong_shape.perf = np.ones((8, 4), dtype=np.int64)
    too_high = _graded(version=5)
    too_high.perf[2, 1] = 1025
    nan = _graded(version=6)
    nan.perf = nan.perf.astype(float)
    nan.perf[0, 0] = np.nan
    same_version = _flat(500, version=3)
    # Before attach: refused before the object is even opened.
    run = FreqRun(policy=policy.get("freq"), table=too_high, source="too_high")
    with pytest.raises(ModelError, match="outside 1..1024"):
        run.start()
    assert run.dep is None and sched_ext.read_state().state == "disabled"
    # While running: the live table and both slots stay exactly as they were.
    with FreqRun(policy=policy.get("freq"), table=good, source="good") as run:
        slots = run.slots
        before = (slots.slots.lookup_u32_key(0), slots.slots.lookup_u32_key(1), slots.ctl.lookup_u32_key(0))
        for bad, why in ((wrong_shape, "shape"), (too_high, "outside"), (nan, "NaN"),
                         (same_version, "live with different values")):
            with pytest.raises(ModelError, match=why):
                run.swap(bad, source=why)
        after = (slots.slots.lookup_u32_key(0), slots.slots.lookup_u32_key(1), slots.ctl.lookup_u32_key(0))
        run.dep.check()
    assert before == after
    assert sched_ext.read_state().state == "disabled"


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aios_lab.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_a_malformed_table_is_refused_before_anything_is_attached(tmp_path):
    bad = tmp_path / "bad.json"
    d = _graded(version=1).to_dict()
    d["perf"][3][2] = float("nan")
    bad.write_text(json.dumps(d))
    r = _cli("deploy", "freq", "--model", str(bad), "--duration", "1")
    assert r.returncode == 3, r.stdout + r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "NaN" in lines[0], r.stderr
    assert sched_ext.read_state().state == "disabled"


def test_cli_deploy_status_and_watched_swap(tmp_path):
    """`deploy freq --model T --watch -- CMD`: status shows the live table's
    version, rewriting T swaps the new one in, CMD's end detaches."""
    path = save_table(tmp_path / "t.json", _graded(version=1))
    flag = tmp_path / "done"
    cmd = _spin_script(NCPU, until=flag)
    proc = subprocess.Popen([sys.executable, "-m", "aios_lab.cli", "deploy", "freq", "--json", "--model", str(path),
                             "--watch", "--interval", "1", "--", "sh", "-c", cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(x) for x in proc.stdout
                                                            if x.startswith("{")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(e["event"] == "attached" for e in events), 300, "freq attached")
        st = _cli("status", "--json")
        assert st.returncode == 0, st.stderr
        live = json.loads(st.stdout)["policy"]
        assert live["name"] == "freq" and live["model"]["version"] == 1, live
        save_table(path, _flat(900, version=2))  # atomic rewrite, as `train freq` writes
        wait_for(lambda: any(e["event"] == "table_swapped" for e in events), 120, "the watched table swapped in")
    finally:
        flag.touch()
        rc = proc.wait(timeout=300)
        reader.join(timeout=30)
    assert rc == 0, proc.stderr.read()
    attached = next(e for e in events if e["event"] == "attached")
    assert attached["table"]["version"] == 1
    swapped = next(e for e in events if e["event"] == "table_swapped")
    assert swapped["version"] == 2 and swapped["slot"] == 0
    final = events[-1]
    assert final["event"] == "detached" and final["stats"]["TICK_SET"] > 0, final
    assert [s["version"] for s in final["table_swaps"]] == [1, 2]
    assert sched_ext.read_state().state == "disabled"


# A task with activations of known length. It spins for a given CPU time,
# then sleeps; it takes its CPU clock (its sum_exec_runtime, what the
# policy counts) as the last thing before each sleep, so an activation's
# measured length is the difference of two stamps: everything it ran from
# one wakeup to the next sleep, the Python around the spin included (under
# TCG that is milliseconds). After each phase it blocks on stdin; when the
# test has read the policy's estimate and writes a line, it prints the
# phase's measured lengths (in the next activation, so they are not in them).
_ACTIVATIONS = r"""
import json, sys, time
clock = time.thread_time_ns
def spin(ms):
    t0 = clock()
    while clock() - t0 < ms * 1_000_000:
        pass
stamps = [clock()]
time.sleep(0.02)
for ms, n in ((20, 25), (4, 25)):
    for i in range(n):
        spin(ms)
        stamps.append(clock())
        time.sleep(0.02)
    spin(ms)
    stamps.append(clock())
    sys.stdin.readline()
    print(json.dumps([b - a for a, b in zip(stamps, stamps[1:])]), flush=True)
    stamps = [stamps[-1]]
"""


def _util_est(lengths: list[int]) -> int:
    """dvfs.task_signal's util_est rule over `lengths`: what the policy's est_ns should be."""
    from aios_lab.dvfs.task_signal import util_est_rule

    est = float(lengths[0])
    for x in lengths[1:]:
        est = util_est_rule(est, float(x))
    return int(est)


def _blocked_in_read(run, pid: int):
    """The policy's state of `pid` once it sleeps with nothing changing for 0.5 s
    (a 20 ms sleep between spins also reads as S: the entry must stand still)."""
    def asleep() -> bool:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"

    if not asleep():
        return None
    a = run.task_estimate(pid)
    time.sleep(0.5)
    b = run.task_estimate(pid)
    return b if asleep() and b is not None and a == b else None


def _threads() -> int:
    return sum(len(os.listdir(f"/proc/{p}/task")) for p in os.listdir("/proc") if p.isdigit()
               and os.path.isdir(f"/proc/{p}/task"))


def test_per_task_estimates_follow_the_tasks_measured_activations():
    with FreqRun(policy=policy.get("freq"), table=_flat(512, version=1), source="flat") as run:
        child = subprocess.Popen([sys.executable, "-c", _ACTIVATIONS], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            seen = []
            for phase in range(2):
                est = wait_for(lambda: _blocked_in_read(run, child.pid), 600, f"the child's phase {phase}")
                child.stdin.write("\n")
                child.stdin.flush()
                seen.append((json.loads(child.stdout.readline()), est))
            stats = run.dep.read_stats()
            threads = _threads()
            cpus = run.states()
        finally:
            child.stdin.close()
            child.wait(timeout=60)
        gone = run.task_estimate(child.pid)
    assert sched_ext.read_state().state == "disabled"
    print("\nmeasured vs policy:", [(m[-3:], e.to_dict()) for m, e in seen])
    everything: list[int] = []
    for measured, est in seen:
        assert est is not None
        everything += measured
        # the policy counted at least this phase's activations (plus the start-up ones)
        assert est.activations >= len(everything), est
        # the last activation: the policy's length against the child's own CPU clock; they differ by
        # the syscalls around the stamps and how fresh sum_exec_runtime is: 25 % + 3 ms
        assert abs(est.last_ns - measured[-1]) <= 0.25 * measured[-1] + 3_000_000, (measured[-1], est)
        # the estimate: the util_est rule over the measured lengths
        want = _util_est(everything)
        assert abs(est.est_ns - want) <= 0.25 * want + 3_000_000, (want, est)
    # (how far the estimate falls in phase 2 depends on the load: under a starved TCG the Python
    # around a 4 ms spin has made activations of 12 ms, and util_est rises to a long one at once;
    # the rule over the measured lengths above is the check)
    assert gone is None   # the child has exited: its state went with it
    live = stats["TASK_INIT"] - stats["TASK_EXIT"]
    # memory bound: one 80-byte struct freq_task (+ the kernel's storage element) per task we schedule
    assert 0 < live <= threads + 16, (stats, threads)
    assert stats["NO_TASK_STATE"] == 0, stats
    assert all(s.queued_est_ns < 10**12 for s in cpus), cpus   # the queued sums never went below zero


# A parent renamed "aiosprior" forks children one at a time; each spins 15 ms
# of CPU and exits, so its only activation is its first, and the policy folds
# it into the program's prior (a fork keeps its parent's name). A last child
# blocks at once; it is read while it waits: it must have started from the
# prior the others left.
_FORKS = r"""
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, b"aiosprior", 0, 0, 0)   # PR_SET_NAME
clock = time.thread_time_ns
def spin(ms):
    t0 = clock()
    while clock() - t0 < ms * 1_000_000:
        pass
for i in range(8):
    pid = os.fork()
    if pid == 0:
        spin(15)
        os._exit(0)
    os.waitpid(pid, 0)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    os._exit(0)
print(pid, flush=True)
sys.stdin.readline()
os.write(w, b"x")
os.waitpid(pid, 0)
"""


def test_a_new_task_starts_from_its_programs_prior():
    with FreqRun(policy=policy.get("freq"), table=_flat(512, version=1), source="flat") as run:
        parent = subprocess.Popen([sys.executable, "-c", _FORKS], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            last = int(parent.stdout.readline())
            est = wait_for(lambda: _blocked_in_read(run, last), 600, "the last child blocked")
            priors = run.program_priors()
            stats = run.dep.read_stats()
            parent.stdin.write("\n")
            parent.stdin.flush()
        finally:
            parent.stdin.close()
            parent.wait(timeout=60)
    print("\nlast child:", est.to_dict(), "prior:", priors.get("aiosprior"))
    assert est.program == "aiosprior", est
    # it started from the rule over 8 first activations of >= 15 ms each (the Python around the
    # spin makes them longer, never shorter)
    assert est.prior_ns >= 0.75 * 15_000_000, est
    p = priors["aiosprior"]
    # the 8 spinners and the last child's own first activation (short: it blocked at once)
    assert p.tasks >= 9 and p.est_ns >= 0.5 * 15_000_000, p
    assert stats["PRIOR_USED"] >= 8 and stats["PRIOR_FULL"] == 0, stats
