"""The miss budget both learners are held to: schedutil's deadline misses on
the training traces, plus a slack. Shared so that the sweep's choice of
table and the RL agent's choice among its snapshots judge alike."""
from __future__ import annotations

from typing import Callable, Sequence


def miss_excess(base: Sequence, *, miss_slack: float, per_trace: bool = False,
                abs_slack: float = 0.0) -> Callable[[Sequence], float]:
    """How far a set of runs (same order as `base`, schedutil's runs) is over
    the budget: 0 when within it. per_trace: each run against its own
    schedutil run (+ abs_slack of its items), so one kind of demand cannot
    pay for another's misses; otherwise the sum against the sum."""
    if per_trace:
        caps = [b.misses * (1 + miss_slack) + abs_slack * b.items for b in base]
        return lambda res: float(sum(max(0.0, r.misses - c) for r, c in zip(res, caps)))
    cap = sum(b.misses for b in base) * (1 + miss_slack)
    return lambda res: float(max(0.0, sum(r.misses for r in res) - cap))


def within_first(energy: float, excess: float) -> tuple:
    """Sort key: any run within the budget beats any over it; within, less
    energy is better; over, less excess is."""
    return (0, energy) if excess == 0 else (1, excess)
