#!/usr/bin/env python3
"""Overhead of `aios-lab collect` vs no tracing vs `perf sched record`.

Runs a scheduler-heavy workload (rt-tests hackbench) N times each way,
interleaved, and compares hackbench's own reported time (so the tools'
start-up is not counted, only what they cost the workload while it runs).
Then measures how many events per second the collector recorded with zero
loss, and how fast Python drains the ring buffers (events per CPU-second of
the draining process).

Every arm runs once per round, in a new random order each round (the
machine's background load drifts), and the figures are medians over rounds
with their spread (min-max and the interquartile range).

Per event, on a workload that is nothing but scheduling events: `perf bench
sched pipe` (two tasks ping-ponging through pipes, every op two switches and
two wakeups), the workload and the tool pinned together to one CPU so that
everything each tool costs (its BPF or perf handlers and its reader) lands in
the op's time; the three arms interleaved. hackbench's own CPU time swings by
10-20 % from run to run, so perf's accounted share there (a difference of two
such totals) is known to +-7 % at 7 runs; this stage resolves the cost per
event to a few ns and gives the ratio of collect's to perf's.

With --baseline-rev REV the default `collect` of that commit runs as one
more arm (a git worktree of REV, its own telemetry object compiled there,
started with PYTHONPATH at its src/): before and after in the same run.

Usage (root): .venv/bin/python benchmarks/collect_overhead.py [--runs 7] [--groups 8] [--loops 2000]
                  [--baseline-rev REV] [--account-runs N] [--pipe-rounds N] [--only-pipe]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_RE = re.compile(r"^Time:\s*([0-9.]+)", re.M)


def hackbench_cmd(groups: int, loops: int) -> list[str]:
    return ["hackbench", "-p", "-g", str(groups), "-f", "20", "-l", str(loops)]


def run_figure(cmd: list[str], pattern: re.Pattern, env: dict[str, str] | None = None) -> float:
    """Run `cmd` and return the figure `pattern` finds in its output."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, **env) if env else None).stdout
    m = pattern.search(out)
    if not m:
        raise RuntimeError(f"no {pattern.pattern!r} in the output of {cmd[-1]!r}...: {out[-300:]}")
    return float(m.group(1))


def run_timed(prefix: list[str], hb: list[str], env: dict[str, str] | None = None) -> float:
    """hackbench under `prefix`: its own reported time, s."""
    return run_figure(prefix + hb, TIME_RE, env)


PIPE_RE = re.compile(r"([0-9.]+)\s+usecs/op")


def pipe_us_per_op(prefix: list[str], loops: int) -> float:
    """`perf bench sched pipe` under `prefix`, all of it on CPU 0: us per op."""
    return run_figure(["taskset", "-c", "0"] + prefix + ["perf", "bench", "sched", "pipe", "-l", str(loops)],
                      PIPE_RE)


def pipe_cost(args, aios: list[str], tmp: Path) -> dict:
    """Per-op cost of collect (default) and perf sched record on the pipe
    ping-pong, arms interleaved in a new random order each round."""
    arms = {"baseline": lambda r: [],
            "collect": lambda r: aios + ["--out", str(tmp / f"pipe-{r}"), "--"],
            "perf-sched": lambda r: ["perf", "sched", "record", "-q", "-o", str(tmp / "pipe-perf.data"), "--"]}
    us: dict[str, list[float]] = {k: [] for k in arms}
    rng = random.Random(args.seed + 1)
    for r in range(args.pipe_rounds):
        order = list(arms)
        rng.shuffle(order)
        for name in order:
            us[name].append(pipe_us_per_op(arms[name](r), args.pipe_loops))
            shutil.rmtree(tmp / f"pipe-{r}", ignore_errors=True)
            (tmp / "pipe-perf.data").unlink(missing_ok=True)
    med = {k: statistics.median(v) for k, v in us.items()}
    extra = {k: (med[k] - med["baseline"]) * 1000 for k in ("collect", "perf-sched")}   # ns per op
    return {"loops": args.pipe_loops, "us_per_op": us, "median_us_per_op": med, "extra_ns_per_op": extra,
            "collect_of_perf": extra["collect"] / extra["perf-sched"] if extra["perf-sched"] > 0 else None}


def write_results(out: Path, figures: dict) -> None:
    """The run's figures as JSON, with the machine they came from."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**figures, "nproc": os.cpu_count(), "kernel": os.uname().release}, indent=2) + "\n")


def dropped(lost: dict) -> int:
    """Records dropped (full ring or task map); unpaired_switch is not a drop."""
    return sum(v for k, v in lost.items() if k != "unpaired_switch")


def spread(v: list[float]) -> str:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return f"[{min(v):.3f}-{max(v):.3f}, IQR {q[0]:.3f}-{q[2]:.3f}]"


def drain_rate(hb: list[str], stream_budget: int | None) -> dict:
    """Events/s recorded and Python's drain rate, switch and wakeup streams on."""
    from aios_lab.telemetry.bpf_collector import BpfCollector

    with BpfCollector(wakeup_events=True, switch_events=True, stream_budget=stream_budget) as col:
        col.start()
        proc = subprocess.Popen(hb, stdout=subprocess.DEVNULL)
        t0, cpu0, n = time.monotonic(), time.process_time(), 0
        while proc.poll() is None:
            col.poll(50)
            n += sum(len(v) for v in col.take_event_frames().values() if v is not None)
        col.poll(0)
        n += sum(len(v) for v in col.take_event_frames().values() if v is not None)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        lost = col.lost()
    return {"command": hb, "stream_budget": stream_budget, "events": n, "wall_s": round(wall, 3), "events_per_s": round(n / wall), "drain_cpu_s": round(cpu, 3),
            "drain_events_per_cpu_s": round(n / cpu) if cpu else None, "lost": lost}


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def baseline_tree(rev: str, tmp: Path) -> dict[str, str]:
    """A worktree of `rev` with its telemetry object built; returns the
    environment that makes `python -m aios_lab.cli` run that revision."""
    from aios_lab import build

    repo = Path(__file__).resolve().parent.parent
    wt = tmp / f"baseline-{rev}"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q", str(wt), rev], check=True)
    build.compile_bpf(wt / "bpf" / "telemetry.bpf.c", wt / "build" / "bpf" / "telemetry.bpf.o")
    return {"PYTHONPATH": str(wt / "src")}


def drop_tree(tmp: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    for wt in tmp.glob("baseline-*"):
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(wt)], check=False)


def account(args, aios: list[str], variants: dict[str, list[str]], hb: list[str], tmp: Path,
            envs: dict[str, dict[str, str]]) -> dict:
    from aios_lab.bpf.object import BpfStats

    hb_cpu: list[float] = []
    perf_cpu: list[float] = []      # perf and hackbench together, per run
    cost: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "bpf": [], "runs": []} for k in variants}
    with BpfStats():
        for r in range(args.account_runs):
            c0 = children_cpu()
            run_timed([], hb)
            hb_cpu.append(children_cpu() - c0)
            c0 = children_cpu()
            run_timed(["perf", "sched", "record", "-q", "-o", str(tmp / "perf-acct.data"), "--"], hb)
            perf_cpu.append(children_cpu() - c0)
            for name, extra in variants.items():
                trace = tmp / f"acct-{name}-{r}"
                run_timed(aios + extra + ["--out", str(trace), "--"], hb, envs.get(name))
                col = json.loads((trace / "metadata.json").read_text())["collector"]
                cost[name]["cpu"].append(col["cpu_s"])
                cost[name]["bpf"].append(col["bpf"]["ns"] / 1e9)
                cost[name]["runs"].append(col["bpf"]["runs"])
                shutil.rmtree(trace, ignore_errors=True)
    base = statistics.median(hb_cpu)
    out = {}
    for k, c in cost.items():
        cpu, bpf = statistics.median(c["cpu"]), statistics.median(c["bpf"])
        out[k] = {"collector_cpu_s": cpu, "bpf_s": bpf, "hackbench_cpu_s": base, "share": (cpu + bpf) / base,
                  "bpf_ns_per_run": 1e9 * sum(c["bpf"]) / max(1, sum(c["runs"])), "raw": c}
    # perf's cost has no such split (its tracing runs in hackbench's tasks,
    # its writer in perf): the CPU that perf and hackbench used together,
    # beyond hackbench's alone. It includes perf's start and end (small,
    # a C program), so it is an upper bound.
    out["perf-sched"] = {"cpu_s": statistics.median(perf_cpu), "hackbench_cpu_s": base,
                         "share": statistics.median(perf_cpu) / base - 1, "raw": perf_cpu, "hackbench_raw": hb_cpu}
    return out


def switch_share(trace: Path) -> float | None:
    """Share of the switches the trace's switches table recorded (from cpu_intervals)."""
    import pyarrow.parquet as pq

    cpu = pq.read_table(trace / "cpu_intervals.parquet", columns=["switches", "switch_records"]).to_pydict()
    rec = [r for r in cpu["switch_records"] if r is not None]
    total = sum(s for s, r in zip(cpu["switches"], cpu["switch_records"]) if r is not None)
    return sum(rec) / total if rec and total else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--loops", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--no-drain", action="store_true", help="skip the zero-loss and drain rate runs")
    ap.add_argument("--account-runs", type=int, default=3,
                    help="runs of each collect arm with kernel.bpf_stats_enabled for the CPU accounting (0: none)")
    ap.add_argument("--pipe-rounds", type=int, default=7,
                    help="rounds of the per-event stage (perf bench sched pipe on one CPU; 0: skip it)")
    ap.add_argument("--pipe-loops", type=int, default=200000)
    ap.add_argument("--only-pipe", action="store_true", help="run only the per-event stage")
    ap.add_argument("--out", type=Path, default=Path("results/collect_overhead.json"))
    ap.add_argument("--baseline-rev", default=None,
                    help="also run the default collect of this commit (before/after in one run)")
    ap.add_argument("--only-default", action="store_true",
                    help="of the collect arms, run only the default (and the baseline revision's)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (BPF and perf sched record)", file=sys.stderr)
        return 1
    for tool in ("hackbench", "perf"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install rt-tests linux-perf", file=sys.stderr)
            return 1
    from aios_lab.bpf import ensure_tracefs

    ensure_tracefs()
    hb = hackbench_cmd(args.groups, args.loops)
    tmp = Path(tempfile.mkdtemp(prefix="aios-overhead-"))
    aios = [sys.executable, "-m", "aios_lab.cli", "collect", "--interval", "1"]
    # collect's default first, then each variant.
    variants = {"collect": [],
                "collect-full": ["--stream-budget", "0"],
                "collect-noswitch": ["--no-switches"],
                "collect-aggr": ["--no-wakeups", "--no-switches"]}
    what = {"collect": "the default: switches + wakeups, each sampled above 2000 records/s per CPU",
            "collect-full": "--stream-budget 0: every switch and wakeup recorded",
            "collect-noswitch": "--no-switches (wakeups sampled as in the default)",
            "collect-aggr": "--no-wakeups --no-switches: per-task/per-CPU maps and migrations only"}
    if args.only_default:
        variants = {"collect": []}
    if args.pipe_rounds:
        pipe = pipe_cost(args, aios, tmp)
        med, extra = pipe["median_us_per_op"], pipe["extra_ns_per_op"]
        print(f"perf bench sched pipe -l {args.pipe_loops}, all on CPU 0, {args.pipe_rounds} rounds, "
              "us per op, median [min-max, IQR]:")
        for k, v in pipe["us_per_op"].items():
            print(f"  {k:11} {med[k]:.3f} {spread(v)}")
        of_perf = f" = {pipe['collect_of_perf']:.2f} of perf sched's" if pipe["collect_of_perf"] else ""
        print(f"  per op (2 switches, 2 wakeups): collect +{extra['collect']:.0f} ns, perf sched record "
              f"+{extra['perf-sched']:.0f} ns{of_perf}", flush=True)
    else:
        pipe = None
    if args.only_pipe:
        write_results(args.out, {"pipe": pipe})
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    envs: dict[str, dict[str, str]] = {}
    if args.baseline_rev:
        name = f"collect@{args.baseline_rev[:10]}"
        envs[name] = baseline_tree(args.baseline_rev, tmp)
        variants[name] = []
        what[name] = f"the default collect of commit {args.baseline_rev}"
    times: dict[str, list[float]] = {"baseline": [], **{k: [] for k in variants}, "perf-sched": []}
    collect_lost: dict[str, list[dict]] = {k: [] for k in variants}
    kept: dict[str, list[float]] = {k: [] for k in variants}   # share of switches recorded
    rng = random.Random(args.seed)
    for r in range(args.runs):
        order = list(times)
        rng.shuffle(order)
        for name in order:
            if name == "baseline":
                times[name].append(run_timed([], hb))
            elif name == "perf-sched":
                times[name].append(run_timed(["perf", "sched", "record", "-q", "-o", str(tmp / "perf.data"),
                                              "--"], hb))
                (tmp / "perf.data").unlink(missing_ok=True)
            else:
                trace = tmp / f"trace-{name}-{r}"
                times[name].append(run_timed(aios + variants[name] + ["--out", str(trace), "--"], hb, envs.get(name)))
                meta = json.loads((trace / "metadata.json").read_text())
                collect_lost[name].append(meta.get("lost", {}))
                kept[name].append(switch_share(trace))
                shutil.rmtree(trace, ignore_errors=True)
        print(f"run {r + 1}/{args.runs}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["baseline"]
    over = {k: (med[k] - base) / base for k in times if k != "baseline"}
    print(f"\nhackbench {' '.join(hb[1:])}, {args.runs} rounds (arms in random order each round), "
          "median [min-max, IQR]:")
    for k, v in times.items():
        print(f"  {k:17} {med[k]:.3f}s {spread(v)}  ratio {med[k] / base:.3f}")
    for k in variants:
        ratio = f", {over[k] / over['perf-sched']:.2f} of perf sched's" if over["perf-sched"] > 0 else ""
        share = [round(x, 3) for x in kept[k] if x is not None]
        print(f"  overhead {k}: {over[k] * 100:+.1f}%{ratio}; records lost per run: "
              f"{[dropped(d) for d in collect_lost[k]]}; share of switches recorded: {share}  ({what[k]})")
    print(f"  overhead perf-sched: {over['perf-sched'] * 100:+.1f}%")
    # The same cost, accounted in CPU time rather than read off the noisy
    # wall clock of a shared machine: the collector process's CPU time while
    # the workload ran plus its BPF programs' run time (kernel.bpf_stats_enabled,
    # which itself adds two clock reads per run), over hackbench's own CPU time.
    accounted = account(args, aios, variants, hb, tmp, envs) if args.account_runs else {}
    perf_acct = accounted.pop("perf-sched", None)
    if perf_acct:
        print(f"  accounted perf-sched: perf + hackbench {perf_acct['cpu_s']:.2f} CPU-s against hackbench's "
              f"{perf_acct['hackbench_cpu_s']:.2f} alone = {perf_acct['share'] * 100:+.2f}% (medians of "
              f"{args.account_runs}; a fifth of it: {perf_acct['share'] * 20:.2f}%)")
    for k, a in accounted.items():
        of_perf = f", {a['share'] / perf_acct['share']:.2f} of perf sched's" if perf_acct and perf_acct["share"] > 0 else ""
        print(f"  accounted {k}: collector {a['collector_cpu_s']:.3f} CPU-s + BPF {a['bpf_s']:.3f} s "
              f"= {a['share'] * 100:.2f}% of hackbench's {a['hackbench_cpu_s']:.2f} CPU-s "
              f"(medians of {args.account_runs}; BPF {a['bpf_ns_per_run']:.0f} ns per program run){of_perf}")
    # Zero-loss rate and drain rate: the collector in this process, every
    # switch and wakeup recorded (no budget), at rising load; then the default budget.
    drains = []
    for groups, budget in ([] if args.no_drain else [(1, None), (2, None), (4, None), (args.groups, None), (args.groups, 2000)]):
        d = drain_rate(hackbench_cmd(groups, args.loops), stream_budget=budget)
        drains.append(d)
        print(f"  collector, hackbench -g {groups}, stream budget {budget or 'none'}: {d['events']} records in "
              f"{d['wall_s']}s = {d['events_per_s']}/s, lost {dropped(d['lost'])}; "
              f"Python drained {d['drain_events_per_cpu_s']} records per CPU-second", flush=True)
    drain = drains
    write_results(args.out, {"command": hb, "times": times, "medians": med, "overhead": over,
                             "collect_lost": collect_lost, "switch_share": kept, "accounted": accounted,
                             "accounted_perf": perf_acct, "pipe": pipe, "drain": drain})
    drop_tree(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
