"""The rollout's admission and bookkeeping on the host (aios_lab.control.rollout):
what it refuses and records before anything is loaded. The transaction
itself (standby, canary window, rollback, quarantine, hotplug restart) runs
in the VM: tests/guest/test_rollout_guest.py."""
from __future__ import annotations

import json

import pytest

from aios_lab.control.audit import Actor
from aios_lab.control.platform import Platform
from aios_lab.control.registry import Registry
from aios_lab.control.rollout import Backoff, Rollout, is_quarantined, last_known_good
from aios_lab.errors import DeployRefused
from aios_lab.exit_codes import VERIFY_FAILED, code_for

from tests.helpers.control import fifo_parts, mark_verified

PLATFORM = Platform("7.3.4-test", "b" * 64, {})
ME = Actor.current()


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "registry") as r:
        yield r


def _entry(reg, slice_ns, *verdicts):
    e = reg.submit(fifo_parts(slice_ns), ME).entry
    for kind, verdict in verdicts:
        if (kind, verdict) == ("verify", "pass"):
            mark_verified(reg, e.hash, actor=ME)
        else:
            reg.record_run(e.hash, kind, verdict, [], PLATFORM, ME)
    return e


def test_an_unverified_entry_is_refused_and_the_refusal_audited(reg, tmp_path):
    e = _entry(reg, 1_000_000)
    with pytest.raises(DeployRefused, match="never verified") as err:
        Rollout(reg, e.hash, ME, run_dir=tmp_path).admit()
    assert code_for(err.value) == VERIFY_FAILED
    failed = _entry(reg, 2_000_000, ("verify", "pass"), ("verify", "fail"))
    with pytest.raises(DeployRefused, match="latest: fail"):
        Rollout(reg, failed.hash, ME, run_dir=tmp_path).admit()
    refusals = [r for r in reg.audit_records() if r.action == "deploy"]
    assert [r.target for r in refusals] == [e.hash, failed.hash]
    assert all(r.verdict.startswith("refused: no passing verification") for r in refusals)


def test_a_verification_of_the_static_stage_alone_does_not_admit_a_deploy(reg, tmp_path):
    e = _entry(reg, 1_000_000)
    mark_verified(reg, e.hash, stages=("static",))
    with pytest.raises(DeployRefused, match="did not run verifier, liveness"):
        Rollout(reg, e.hash, ME, run_dir=tmp_path).admit()
    mark_verified(reg, e.hash, stages=("static", "verifier", "liveness"))
    assert Rollout(reg, e.hash, ME, run_dir=tmp_path).admit() is None   # admitted; no LKG yet


def test_the_verifiers_deployed_arm_is_the_last_known_good_entry_from_its_stored_object(reg, tmp_path):
    from aios_lab.control.jobs import AGAINST_LKG, AGAINST_NONE, deployed_arm
    from aios_lab.control.verify import Case, _check_perf
    from aios_lab.control.verify.performance import StoredArm, deployed_arm as perf_arm
    from aios_lab.errors import InputError

    cand = _entry(reg, 1_000_000)
    stages = ("static", "performance")
    arm, said = deployed_arm(reg, cand, AGAINST_LKG, stages, tmp_path)
    assert arm is None and "no last known good" in said
    old = _entry(reg, 7_000_000, ("verify", "pass"), ("deploy", "pass"))
    arm, said = deployed_arm(reg, cand, AGAINST_LKG, stages, tmp_path)
    assert arm["entry"] == old.hash and arm["tunables"]["slice_ns"] == 7_000_000 and old.hash[:12] in said
    # the stored object, byte for byte, not whatever fifo the search path holds now
    assert (tmp_path / old.hash[:16] / f"{old.hash}.bpf.o").read_bytes() == reg.blob(old.object)
    spec = perf_arm(arm)
    assert isinstance(spec, StoredArm) and spec.label == "deployed" and spec.entry == old.hash
    _check_perf(Case("fifo", stages=stages, deployed=arm))      # loads and checks its tunables
    assert deployed_arm(reg, cand, AGAINST_NONE, stages, tmp_path) == (None, "")
    assert deployed_arm(reg, cand, AGAINST_LKG, ("static",), tmp_path) == (None, "")  # no performance stage
    named = _entry(reg, 9_000_000)            # named explicitly: need not have been deployed
    assert deployed_arm(reg, cand, named.hash[:12], stages, tmp_path / "x")[0]["entry"] == named.hash
    with pytest.raises(InputError, match="its own deployed arm"):
        deployed_arm(reg, cand, cand.hash, stages, tmp_path)


def test_an_override_is_audited_with_its_reason(reg, tmp_path):
    e = _entry(reg, 1_000_000)
    logs = []
    Rollout(reg, e.hash, ME, run_dir=tmp_path, override="incident 42", log=logs.append).admit()
    rec = [r for r in reg.audit_records(e.hash) if r.action == "override"]
    assert len(rec) == 1 and json.loads(rec[0].args) == {"reason": "incident 42"}
    assert rec[0].verdict.startswith("accepted: no passing verification")
    assert any("OVERRIDE" in m for m in logs)
    assert reg.verify_chain().ok


def test_the_last_known_good_is_the_latest_that_held_and_is_not_quarantined(reg, tmp_path):
    assert last_known_good(reg) is None
    a = _entry(reg, 1_000_000, ("verify", "pass"), ("deploy", "pass"))
    b = _entry(reg, 2_000_000, ("verify", "pass"), ("deploy", "pass"))
    c = _entry(reg, 3_000_000, ("verify", "pass"), ("deploy", "ejected"))
    assert last_known_good(reg).hash == b.hash
    # the candidate itself is never its own fallback
    assert last_known_good(reg, exclude=b.hash).hash == a.hash
    assert Rollout(reg, c.hash, ME, run_dir=tmp_path).admit().hash == b.hash
    reg.record_run(b.hash, "deploy", "quarantined", [], PLATFORM, ME)
    assert is_quarantined(reg, b) and last_known_good(reg).hash == a.hash
    with pytest.raises(DeployRefused, match="quarantined"):
        Rollout(reg, b.hash, ME, run_dir=tmp_path).admit()
    with pytest.raises(DeployRefused, match="another entry"):
        Rollout(reg, c.hash, ME, run_dir=tmp_path, lkg=c.hash).admit()
    assert Rollout(reg, c.hash, ME, run_dir=tmp_path, lkg=a.hash[:8]).admit().hash == a.hash


def test_backoff_doubles_up_to_its_cap():
    b = Backoff(first_s=5, factor=2, max_s=30)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]
