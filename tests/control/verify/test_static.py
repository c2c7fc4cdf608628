"""The staged verifier's host side: the static stage on the real toolchain
and the pinned kernel's BTF, the report, the corpus's judge, the CLI.
The kernel stages are checked in the VM (tests/control/verify/test_corpus.py)."""
import json
import re

import pytest
from click.testing import CliRunner

from aios_lab import exit_codes, paths
from aios_lab.sched import policy
from aios_lab.cli import main
from aios_lab.control.verify import Case, corpus, criteria, static, target, verify_many
from aios_lab.control.verify.elf import undefined_symbols
from aios_lab.bpf.object import verifier_complaint
from aios_lab.control.verify.kernel_verifier import parse_stats
from aios_lab.control.verify.report import Check, StageReport, VerifyReport

from tests.helpers import DATA

CORPUS = DATA / "policies" / "corpus"


@pytest.fixture
def corpus_path(monkeypatch):
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(CORPUS))


@pytest.fixture(scope="module")
def tgt():
    return target.resolve()


@pytest.mark.parametrize("name", ["fifo", "mllb", "freq"])
def test_good_policies_pass_the_static_stage(name, tgt):
    rep, values = static.run(policy.get(name), {}, tgt)
    assert rep.passed, [(c.name, c.reason) for c in rep.checks]
    assert [c.name for c in rep.checks] == ["manifest", "tunables", "kernel_features", "werror"]
    assert values == policy.get(name).resolve_tunables({})
    kf = rep.checks[2].evidence["kfuncs"]
    assert kf["scx_bpf_create_dsq"]["present"]
    # the kernel dropped the pre-6.13 names; the objects only call them __weak
    assert kf["scx_bpf_dispatch"] == {"binding": "weak", "kernel_name": "scx_bpf_dispatch", "present": False}


def test_static_cases_of_the_corpus_are_caught_with_their_reason(corpus_path):
    cases = [c for c in corpus.load(CORPUS / "corpus.toml") if c.expect.startswith("static/")]
    assert len(cases) == 2
    reports = verify_many([Case(c.policy, c.overrides, ("static",)) for c in cases])
    for c, r in zip(cases, reports):
        assert corpus.judge(c, r) == "caught", (c.name, r.to_dict()["reason"])


def test_a_tunable_override_outside_its_range_fails_and_later_stages_are_skipped():
    rep = verify_many([Case("fifo", {"slice_ns": "1000"})])[0]
    d = rep.to_dict()
    assert not rep.passed and d["failed_stage"] == "static" and d["failed_check"] == "tunables"
    assert "slice_ns=1000 is outside [100000, 1000000000]" in d["reason"]
    assert [(s["stage"], s["skipped"]) for s in d["stages"][1:]] == [("verifier", "static failed"),
                                                                    ("liveness", "static failed"),
                                                                    ("performance", "static failed")]
    json.dumps(d)  # plain data
    assert re.fullmatch(r"[0-9a-f]{64}", rep.digest())


def test_elf_reader_tells_strong_externs_from_weak_ones(corpus_path):
    obj = policy.get("corpus_oldapi").object_path
    syms = undefined_symbols(obj.read_bytes())
    assert syms["scx_bpf_switch_all"] == "strong"
    assert syms["scx_bpf_create_dsq"] == "weak"


def test_verifier_statistics_and_complaint_are_parsed():
    log = ["0: R1=ctx() R10=fp0", "8: (0f) r5 += r3",
           "math between map_value pointer and register with unbounded min value is not allowed",
           "Verification failed: Register Type Safety: Pointer offset is not safe", "",
           "processed 8835 insns (limit 1000000) max_states_per_insn 10 total_states 601 peak_states 569 mark_read 3",
           "stack depth 24+0", "verification time 189235 usec"]
    assert verifier_complaint(log).startswith("math between map_value pointer")
    assert parse_stats("\n".join(log)) == {
        "insns_processed": 8835, "insn_limit": 1_000_000, "max_states_per_insn": 10, "total_states": 601,
        "peak_states": 569, "verification_time_us": 189235, "stack_depth": [24, 0]}


def test_judge_classes_every_outcome():
    bad = corpus.CorpusCase("x", "p", "verifier/load", "rejected")
    good = corpus.CorpusCase("g", "fifo", "pass")

    def rep(stage, check, passed, reason=""):
        return VerifyReport("p", {}, {}, {}, [StageReport.from_checks(stage, [Check(check, passed, "c", {}, reason)], 1)])
    assert corpus.judge(bad, rep("verifier", "load", False, "the kernel verifier rejected it")) == "caught"
    assert corpus.judge(bad, rep("liveness", "stays_enabled", False, "rejected")) == "wrong-place"
    assert corpus.judge(bad, rep("verifier", "load", True)) == "missed"
    assert corpus.judge(good, rep("static", "werror", True)) == "passed"
    assert corpus.judge(good, rep("static", "werror", False, "warning")) == "falsely-rejected"


def test_cli_failed_verification_has_its_exit_code_and_a_report(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["verify", "fifo", "--set", "slice_ns=1000", "--stages", "static",
                                    "--out", str(out)])
    assert res.exit_code == exit_codes.VERIFY_FAILED == 9, res.output
    assert "FAILED at static/tunables" in res.output
    saved = json.loads(out.read_text())
    assert saved["failed_check"] == "tunables" and saved["digest"]


def test_cli_refuses_unknown_stages_with_a_usage_error():
    res = CliRunner().invoke(main, ["verify", "fifo", "--stages", "static,speed"])
    assert res.exit_code == exit_codes.USAGE
    assert "stages are static, verifier, liveness, performance" in res.output


def test_the_written_criteria_are_the_coded_ones():
    doc = (paths.project_root() / "docs" / "verifier.md").read_text()
    for text in [f"{criteria.MAX_INSN_FRACTION:.0%}", f"{criteria.WATCHDOG_MS} ms", f"x{criteria.MAX_INSN_GROWTH}",
                 f"{criteria.STRESS_S:g} s", *(f"`{k}` <= {v}" for k, v in criteria.EVENT_LIMITS.items()),
                 *(f"`{k}` | {v:.0%}" for k, v in criteria.PERF_MARGINS.items()),
                 f"family alpha {criteria.PERF_ALPHA}", f"{criteria.PERF_RUNS} interleaved runs",
                 f"`{criteria.PERF_WORKLOAD}`"]:
        assert text in doc, text


def test_a_parent_report_bounds_verifier_work_growth():
    from aios_lab.control.verify import parent_programs
    from aios_lab.control.verify.kernel_verifier import _growth_check
    from aios_lab.errors import InputError

    parent = {"stages": [{"stage": "verifier", "checks": [
        {"name": "load", "passed": True, "evidence": {"programs": {"a": {"insns_processed": 10_000},
                                                                   "b": {"insns_processed": 100}}}}]}]}
    progs = parent_programs(parent)
    ok = _growth_check({"a": {"insns_processed": 14_000}, "b": {"insns_processed": 2_000}}, progs)
    assert ok.passed  # b grew x20 but by fewer than INSN_GROWTH_SLACK instructions
    bad = _growth_check({"a": {"insns_processed": 16_000}}, progs)
    assert not bad.passed and "a 10000 -> 16000" in bad.reason
    with pytest.raises(InputError, match="no passing kernel-verifier stage"):
        parent_programs({"stages": []})
