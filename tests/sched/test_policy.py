import pytest

from aios_lab.sched import policy
from aios_lab.errors import PolicyError

from tests.helpers import DATA


def test_fifo_is_discovered_with_its_tunables():
    pols = policy.discover()
    fifo = pols["fifo"]
    assert fifo.kind == "sched_ext" and fifo.struct_ops == "fifo_ops" and not fifo.test_only
    assert fifo.tunables["slice_ns"].default == 20_000_000
    assert fifo.stats.enum == "fifo_stat" and set(fifo.stats.help) == {"DIRECT", "QUEUED", "DISPATCHED"}


def test_test_policies_come_only_from_the_search_path(monkeypatch, tmp_path):
    assert "stall" not in policy.discover()
    monkeypatch.setenv("AIOS_LAB_POLICY_PATH", str(DATA / "policies"))
    assert policy.get("stall").test_only


def test_tunables_are_checked():
    fifo = policy.get("fifo")
    assert fifo.resolve_tunables({"slice_ns": "5000000", "strict_fifo": "true"}) == {
        "slice_ns": 5_000_000, "strict_fifo": True}
    with pytest.raises(PolicyError, match="outside"):
        fifo.resolve_tunables({"slice_ns": "5"})
    with pytest.raises(PolicyError, match="not a boolean"):
        fifo.resolve_tunables({"strict_fifo": "maybe"})
    with pytest.raises(PolicyError, match="no tunable 'slices'"):
        fifo.resolve_tunables({"slices": "1"})


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(PolicyError, match="no policy named 'nope'") as exc:
        policy.get("nope")
    assert "known: fifo" in exc.value.one_line()


@pytest.mark.parametrize("text,err", [
    ("name = \"x\"\nkind = \"sched_ext\"\n", "missing required key 'source'"),
    ("name = [", "not valid TOML"),
    ("name = \"x\"\nkind = \"sched_ext\"\nsource = \"x.bpf.c\"\n", "needs struct_ops"),
    ("name = \"x\"\nkind = \"sched_ext\"\nsource = \"x.bpf.c\"\nstruct_ops = \"o\"\n"
     "[tunables.t]\ntype = \"float\"\ndefault = 1\n", "unknown type"),
    ("name = \"x\"\nkind = \"sched_ext\"\nsource = \"x.bpf.c\"\nstruct_ops = \"o\"\n"
     "[model]\nkind = \"forest\"\nslots_map = \"m\"\nctl_map = \"c\"\n", "unknown model kind 'forest'"),
    ("name = \"x\"\nkind = \"sched_ext\"\nsource = \"x.bpf.c\"\nstruct_ops = \"o\"\n"
     "[model]\nkind = \"tree\"\nslots_map = \"m\"\nctl_map = \"c\"\n", "missing required key 'model.features_enum'"),
])
def test_malformed_manifests_give_one_clear_error(tmp_path, text, err):
    (tmp_path / "x.bpf.c").write_text("")
    m = tmp_path / "manifest.toml"
    m.write_text(text)
    with pytest.raises(PolicyError, match=err):
        policy.load_manifest(m)
