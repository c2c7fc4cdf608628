"""Model kinds are registered types: a third kind is one class plus a manifest.

The test registers a tiny third kind ("toy": a JSON threshold file) and runs
it through the real code: the manifest loader, the kinds registry, the CLI's
deploy checks, DeployLoop's construction and its whole run (begin, start,
prepare, poll, tick, swap, stop, end), and `status`'s wording. Nothing else in the
package knows "toy". Its deployment is the toy's own, in user space (a
counter the loop reads as stats): the loop needs no kernel to be driven, and
attaching real policies is what tests/guest/test_freq_guest.py and
test_mllb_guest.py do in the VM.
"""
from __future__ import annotations

import json
import signal

import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.errors import ModelError, PolicyError
from aios_lab.sched import kinds, policy
from aios_lab.sched.deploy_loop import DeployLoop

MANIFEST = """
name = "toy"
kind = "sched_ext"
source = "toy.bpf.c"
struct_ops = "toy_ops"
test_only = true

[model]
kind = "toy"
slots_map = "thresholds"
ctl_map = "thresholds_ctl"
threshold_scale = "1000"
"""


class _ToyDeployment:
    """What the toy kind deploys: a user-space counter (the Deployment interface the loop uses)."""

    load_s = attach_s = 0.0
    stats = True

    def __init__(self, tunables):
        self.tunables = tunables
        self.ticks = 0

    def check(self):
        pass

    def read_stats(self):
        return {"TICKS": self.ticks}


class ToyKind(kinds.ModelKind):
    name = "toy"
    policies = "toy policies"
    what = "a toy threshold"
    noun = "threshold"
    options = frozenset({"watch"})

    def __init__(self, policy, threshold):
        self.policy, self.threshold, self.dep = policy, threshold, None
        self.calls: list[str] = []
        self.swaps: list[int] = []

    @classmethod
    def load(cls, path):
        value = json.loads(open(path).read()).get("threshold")
        if not isinstance(value, int):
            raise ModelError(f"{path}: no integer threshold")
        return value

    @classmethod
    def create(cls, policy, tunables, model_path=None, **options):
        return cls(policy, cls.load(model_path) if model_path else None)

    def begin(self):
        self.calls.append("begin")

    def start(self):
        self.calls.append("start")
        self.dep = _ToyDeployment({})
        self.prepare(self.dep)  # the toy's loaded "object" is its user-space deployment
        return self.dep

    def prepare(self, obj):
        self.calls.append("prepare")
        obj.threshold = self.threshold

    def stop(self):
        self.calls.append("stop")
        return None

    def swap(self, model, source=""):
        self.threshold = model
        self.swaps.append(model)
        return model

    def poll(self):
        self.dep.ticks += 1

    def tick(self, t, emit):
        emit({"event": "toy_tick", "threshold": self.threshold})

    def status(self):
        return {"threshold": self.threshold}

    def end(self, status, final, emit):
        self.calls.append(f"end:{status}")
        return {"toy_swaps": list(self.swaps)}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy policy folder on AIOS_LAB_POLICY_PATH and ToyKind registered, for this test only."""
    folder = tmp_path / "policies" / "toy"
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(MANIFEST)
    (folder / "toy.bpf.c").write_text("/* never built: the toy kind deploys in user space */\n")
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(tmp_path / "policies"))
    kinds.names()  # the package's own kinds, before the registry is copied
    monkeypatch.setattr(kinds.KINDS, "_by_name", dict(kinds.KINDS._by_name))
    kinds.register(ToyKind)
    model = tmp_path / "toy.json"
    model.write_text(json.dumps({"threshold": 7}))
    return model


def test_the_manifest_loader_looks_the_kind_up_in_the_registry(toy):
    pol = policy.get("toy")
    assert pol.model.kind == "toy" and kinds.for_policy(pol) is ToyKind
    assert pol.model.extra == {"threshold_scale": "1000"}  # a kind's own [model] keys reach it
    assert kinds.names() == ["freq-table", "toy", "tree"]


def test_an_unregistered_kind_is_refused_naming_the_registered_ones(tmp_path, monkeypatch):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "manifest.toml").write_text(MANIFEST)
    (folder / "toy.bpf.c").write_text("\n")
    with pytest.raises(PolicyError, match="unknown model kind 'toy'") as e:
        policy.load_manifest(folder / "manifest.toml")
    assert "freq-table, tree" in e.value.one_line()


def test_the_deploy_loop_runs_a_third_kind_through_the_protocol(toy):
    events: list[dict] = []
    loop = DeployLoop(policy.get("toy"), {}, model_path=str(toy), watch_model=True)
    assert isinstance(loop.model, ToyKind) and loop.model.threshold == 7

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "toy_tick" and not loop.model.swaps:
            loop.swap(9, source="test")

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    res = loop.run(duration_s=0.25, interval_s=0.1, on_event=on_event)
    assert {s: signal.getsignal(s) for s in before} == before  # the loop gave its handlers back
    assert loop.model.calls == ["begin", "start", "prepare", "stop", "end:complete"]
    attached = events[0]
    assert attached["event"] == "attached" and attached["threshold"] == 7
    assert any(e["event"] == "stats" and e["stats"]["TICKS"] > 0 for e in events)
    assert [e["threshold"] for e in events if e["event"] == "toy_tick"][-1] == 9
    assert res.model == {"toy_swaps": [9]} and res.ejected is None


def test_options_the_kind_does_not_take_are_refused_before_anything_runs(toy, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ModelError, match="no integer threshold"):
        DeployLoop(policy.get("toy"), {}, model_path=str(bad))
    with pytest.raises(PolicyError, match="deploys a toy threshold: retrain_every apply to decision-tree"):
        DeployLoop(policy.get("toy"), {}, model_path=str(toy), retrain_every_s=5)
    res = CliRunner().invoke(main, ["deploy", "toy", "--model", str(toy), "--mode", "model"])
    assert res.exit_code == 2 and "policy toy deploys a toy threshold: --mode apply to decision-tree" in res.output
    res = CliRunner().invoke(main, ["deploy", "fifo", "--watch"])
    assert res.exit_code == 2 and "toy policies" in res.output  # who can watch comes from the registry


def test_status_names_the_model_by_its_kind(toy, monkeypatch):
    from aios_lab.sched import status

    monkeypatch.setattr(status, "live_status", lambda: {
        "sched_ext": {"state": "enabled", "ops": "toy", "enable_seq": 1, "nr_rejected": 0},
        "policy": {"name": "toy", "pid": 1, "uptime_s": 1.0, "tunables": {}, "stats": {},
                   "model": {"kind": "toy", "version": 3, "swaps": 1}}})
    res = CliRunner().invoke(main, ["status"])
    assert res.exit_code == 0 and "threshold version 3 (1 swaps)" in res.output
