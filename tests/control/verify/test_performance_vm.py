"""VM tier: the verifier's performance stage, in one boot (pytest -m vm).

corpus_slower (correct and live, but every task it may run goes to CPU 0)
must be judged worse than EEVDF on the default workload, and fifo must not
be falsely rejected. Only the performance stage runs: the corpus test
(tests/control/verify/test_corpus.py) checks both policies' earlier stages. QEMU runs
under SCHED_RR: on a busy 2-core host at nice 0 the placement control reads
x1.0-x1.2 and nothing could be judged (benchmarks/RESULTS.md, issue 16).
"""
import re

import pytest

from aios_lab.control.verify import Case, criteria, verify_many

from tests.helpers import DATA

pytestmark = pytest.mark.vm

CORPUS = DATA / "policies" / "corpus"


def test_the_slower_policy_is_caught_and_fifo_is_not_falsely_rejected(monkeypatch):
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(CORPUS))
    slower, fifo = verify_many([Case("corpus_slower", stages=("performance",)),
                                Case("fifo", stages=("performance",))], cpus=2, realtime=True)
    for rep in (slower, fifo):
        (stage,) = rep.stages
        assert stage.stage == "performance" and not stage.skipped
        platform = stage.checks[0]
        assert platform.name == "platform" and platform.passed, platform.reason
    slow_verdict = slower.stages[0].checks[1]
    assert not slower.passed and slower.failure()[1].name == "verdict", slower.to_dict()["reason"]
    assert slow_verdict.evidence["verdict"] == "worse"
    # either metric is a fair catch: the makespan on a loaded host has the thinner margin
    assert re.match(r"worse than eevdf on (makespan_s|runq_wait_s)", slow_verdict.reason), slow_verdict.reason
    fifo_verdict = fifo.stages[0].checks[1]
    assert fifo.passed, (fifo.to_dict()["reason"], fifo_verdict.evidence["comparisons"])
    assert fifo_verdict.evidence["verdict"] in ("better", "no-worse")
    for rep in (slower, fifo):
        ev = rep.stages[0].checks[1].evidence
        assert ev["correction"] == "bonferroni" and len(ev["comparisons"]) == len(criteria.PERF_MARGINS)
        # every run's raw values, as registry samples
        samples = rep.samples()
        perf = [s for s in samples if s.stage == "performance" and s.metric == "makespan_s"]
        assert sorted((s.arm, s.run_index) for s in perf) == sorted(
            (arm, i) for arm in ("candidate", "eevdf") for i in range(criteria.PERF_RUNS))
        assert all(s.value > 0 for s in perf)
