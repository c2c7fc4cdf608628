"""VM tier: the staged verifier's corpus, judged in one boot (pytest -m vm).

Every bad policy must be caught at its stage for its reason, and fifo, mllb
and freq must pass static, kernel verifier and liveness: no false rejection.
The performance stage is judged in tests/control/verify/test_performance_vm.py (it costs
~40 s a policy); here corpus_slower, bad only in performance, must pass the
three stages before it: it is correct and live.
"""
import pytest

from aios_lab.control.verify import corpus, criteria, verify_many

from tests.helpers import DATA

pytestmark = pytest.mark.vm

CORPUS = DATA / "policies" / "corpus"
STAGES = ("static", "verifier", "liveness")


def test_the_corpus_gets_its_verdicts_in_one_boot(monkeypatch):
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(CORPUS))
    cases = corpus.load(CORPUS / "corpus.toml")
    reports = verify_many([c.case(STAGES) for c in cases], cpus=2)
    verdicts = {c.name: corpus.judge(c, r) for c, r in zip(cases, reports)}
    table = "\n".join(f"{c.name}: {verdicts[c.name]} (expected {c.expect}; got {r.to_dict()['failed_stage']}/"
                      f"{r.to_dict()['failed_check']}: {r.to_dict()['reason']})" for c, r in zip(cases, reports))
    assert all(v in ("caught", "passed") for v in verdicts.values()), table
    assert sum(v == "passed" for v in verdicts.values()) == 4  # fifo, mllb, freq and corpus_slower
    boot = reports[0].target["platform"]["boot"]
    # A panic or oops fails the runner itself; an RCU stall report may come
    # from the starving policy (that is what it does), so it is only recorded.
    assert "oops" not in boot["console"] and "panic" not in boot["console"], boot
    for c, r in zip(cases, reports):
        stages = {s.stage: s for s in r.stages}
        if not c.bad:
            live = stages["liveness"].checks[0].evidence
            # the hotplug cycle really happened, and a policy without
            # cpu_online/offline was restarted as the kernel asked
            assert live["hotplug"].get("offline_online_s") is not None, live
            assert live["attaches"] == 1 + len(live["restarts"]) and live["watchdog_ms"] == criteria.WATCHDOG_MS
            assert all(x["kind"] == 66 and x["restart"] for x in live["restarts"]), live["restarts"]
            progs = stages["verifier"].checks[0].evidence["programs"]
            assert progs and all(p["insns_processed"] > 0 and p["jited_bytes"] > 0 for p in progs.values()), progs
