"""The registry under several processes at once, and under SIGKILL in the
middle of a submit: every entry is whole and audited once, or absent."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pytest

from aios_lab.control.audit import Actor
from aios_lab.control.registry import Registry

from tests.helpers.control import fifo_parts

CTX = multiprocessing.get_context("fork")
ME = Actor(1000, "alice")


def _submitter(root, worker: int, count: int, barrier) -> None:
    with Registry(root) as reg:
        barrier.wait()
        for i in range(count):
            reg.submit(fifo_parts(1_000_000 + worker * 1000 + i), Actor(1000 + worker, f"w{worker}"))
            reg.submit(fifo_parts(), Actor(1000 + worker, f"w{worker}"))  # the same entry from everyone


def _consistent(reg: Registry) -> None:
    """Every entry whole, audited as accepted exactly once; every accepted
    submit names an entry; the chain intact."""
    state = reg.check()
    assert state["damaged"] == [] and state["audit"]["ok"], state
    entries = {e.hash for e in reg.entries()}
    accepted = [r.target for r in reg.audit_records() if r.action == "submit" and r.verdict == "accepted"]
    assert sorted(accepted) == sorted(entries)


def test_concurrent_submits_from_processes(tmp_path):
    root, workers, count = tmp_path / "registry", 4, 4
    Registry(root).close()
    barrier = CTX.Barrier(workers)
    procs = [CTX.Process(target=_submitter, args=(root, w, count, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Registry(root) as reg:
        assert len(reg.entries()) == workers * count + 1
        recs = reg.audit_records()
        assert len(recs) == 2 * workers * count and [r.seq for r in recs] == list(range(1, len(recs) + 1))
        common = fifo_parts().key()
        assert [r.verdict for r in recs if r.target == common].count("accepted") == 1
        _consistent(reg)


def _stop_inside_the_transaction(root, ready) -> None:
    """Submit, but stop for good right after the audit record is written and
    before the commit (the parent kills us there)."""
    from aios_lab.control import registry

    real = registry.audit.append

    def append_then_hang(*args, **kwargs):
        rec = real(*args, **kwargs)
        ready.set()
        time.sleep(600)
        return rec

    registry.audit.append = append_then_hang
    with Registry(root) as reg:
        reg.submit(fifo_parts(7_000_000), ME)


def test_killed_inside_the_transaction_leaves_nothing(tmp_path):
    root = tmp_path / "registry"
    with Registry(root) as reg:
        before = reg.submit(fifo_parts(), ME).entry
    ready = CTX.Event()
    child = CTX.Process(target=_stop_inside_the_transaction, args=(root, ready))
    child.start()
    assert ready.wait(60), "the child never reached its commit"
    with Registry(root) as reg:  # a reader meanwhile sees only what was committed
        assert [e.hash for e in reg.entries()] == [before.hash]
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    with Registry(root) as reg:
        assert [e.hash for e in reg.entries()] == [before.hash]
        assert len(reg.audit_records()) == 1
        _consistent(reg)
        again = reg.submit(fifo_parts(7_000_000), ME)  # the lock died with the child
        assert again.created and again.entry.parent == before.hash
        _consistent(reg)


def _submit_forever(root, seed: int) -> None:
    rnd = random.Random(seed)
    with Registry(root) as reg:
        i = 0
        while True:
            # A large source blob widens the window in which the kill lands in a blob write.
            parts = fifo_parts(2_000_000 + seed * 10_000 + i)
            reg.submit(type(parts)(parts.name, parts.kind, parts.object, parts.manifest, parts.tunables,
                                   None, rnd.randbytes(2 << 20)), ME)
            i += 1


@pytest.mark.parametrize("seed", range(5))
def test_killed_at_a_random_moment_leaves_nothing_half_done(tmp_path, seed):
    root = tmp_path / "registry"
    Registry(root).close()
    rnd = random.Random(seed)
    for round_ in range(3):
        child = CTX.Process(target=_submit_forever, args=(root, seed * 10 + round_))
        child.start()
        time.sleep(rnd.uniform(0.05, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        with Registry(root) as reg:
            _consistent(reg)
            reg.blobs.sweep()
            assert reg.blobs.scratch() == []
