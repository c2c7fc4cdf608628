#!/usr/bin/env python3
"""Periodic-deadline demand: a frame loop at --fps with per-frame work.

Models a video decoder or game render thread: every 1/fps a frame's work
(a mean of --load of the period, jittered, with occasional heavy frames
such as scene changes) must finish before the next frame starts. A late
frame is dropped: the loop skips to the next period boundary, as a
compositor would. A second, light periodic task (an audio thread at
100 Hz) shares the machine. Prints the frames run and dropped at the end.
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


def periodic(seed: int, duration: float, period: float, load: float, heavy_every: int, out) -> None:
    rng = random.Random(seed)
    t0 = time.monotonic()
    nxt = t0
    frames = dropped = 0
    while nxt - t0 < duration:
        work = period * load * rng.uniform(0.7, 1.3)
        if heavy_every and rng.random() < 1 / heavy_every:
            work *= 1.8
        spin(work)
        frames += 1
        nxt += period
        now = time.monotonic()
        if now > nxt:  # missed: drop to the next boundary
            late = int((now - nxt) / period) + 1
            dropped += late
            nxt += late * period
        time.sleep(max(0.0, nxt - time.monotonic()))
    if out is not None:
        out.put((frames, dropped))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=60.0)
    ap.add_argument("--load", type=float, default=0.45, help="mean frame work as a share of the period")
    a = ap.parse_args()
    q = mp.Queue()
    render = mp.Process(target=periodic, args=(a.seed, a.duration, 1 / a.fps, a.load, 30, q))
    audio = mp.Process(target=periodic, args=(a.seed + 7, a.duration, 0.01, 0.12, 0, None))
    render.start()
    audio.start()
    frames, dropped = q.get()
    render.join()
    audio.join()
    print(f"frames {frames} dropped {dropped}")


if __name__ == "__main__":
    main()
