#!/usr/bin/env python3
"""Interactive/bursty demand: short CPU bursts separated by think time.

Models a UI or request handler: each of --threads workers (processes, so
they can use separate CPUs) waits an exponentially distributed think time,
then spins a lognormal burst. Bursts come in trains (a user typing, a page
load), so the load swings between idle and busy within tens of
milliseconds: the case where a governor's reaction time matters.
Deterministic for a given --seed, apart from the OS's own timing.
"""
import argparse
import multiprocessing as mp
import random
import time


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def worker(seed: int, duration: float, think_ms: float, burst_ms: float) -> None:
    rng = random.Random(seed)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        # a train of 1..8 bursts with short gaps, then a longer think time
        for _ in range(rng.randint(1, 8)):
            spin(min(rng.lognormvariate(0, 0.8) * burst_ms, 80) / 1000)
            time.sleep(rng.expovariate(1 / 4) / 1000)
        time.sleep(rng.expovariate(1 / think_ms) / 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--think-ms", type=float, default=60.0)
    ap.add_argument("--burst-ms", type=float, default=6.0)
    a = ap.parse_args()
    procs = [mp.Process(target=worker, args=(a.seed * 100 + i, a.duration, a.think_ms, a.burst_ms))
             for i in range(a.threads)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
