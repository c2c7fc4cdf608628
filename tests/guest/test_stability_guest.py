"""Attach/detach cycles of every policy under load (the CI share of the
stability benchmark, benchmarks/stability.py). An oops or panic in any cycle
fails the VM tier, which scans the guest console (tests/vm/test_runner_boot.py)."""
import pytest

from aios_lab.bench.stability import VARIANTS, run_cycles

pytestmark = pytest.mark.guest

CYCLES = 3


def test_every_policy_attaches_and_detaches_cleanly_under_hackbench():
    rep = run_cycles(list(VARIANTS), CYCLES, hold_s=0.5)
    assert rep.failures == []
    assert rep.cycles == {name: CYCLES for name in VARIANTS}
    assert set(VARIANTS) >= {"fifo", "mllb-collect", "mllb-model", "freq"}
