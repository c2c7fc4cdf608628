"""Property tests (hypothesis) for every parser and loader, and the quantiser.

Random and mutated inputs must give either a correct result or the library's
own typed error (an AiosError subclass), never another exception: no
ValueError, KeyError, TypeError, IndexError, RecursionError or MemoryError
from inside a loader. Each property runs a few dozen examples so that the
file stays a few seconds of CI; hypothesis' database keeps any failure it
finds for the next run.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from aios_lab.cpufreq.governor_loop import governor_state
from aios_lab.dvfs.table import FreqTable, load_table, save_table
from aios_lab.errors import CpufreqError, ModelError, PolicyError, TraceError
from aios_lab.mllb import model as m
from aios_lab.mllb.estimator import TreeModel
from aios_lab.mllb.limits import limits
from aios_lab.mllb.model import feature_bounds, load_model, save_model
from aios_lab.sched.policy import load_manifest
from aios_lab.telemetry.trace import Trace
from aios_lab.workloads import WorkloadError, load as load_workload

from tests.helpers.mllb import small_tree
from tests.helpers.traces import metrics_trace

MLLB_NR_FEATURES = limits().nr_features

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=15)


def _paths(doc, prefix=()):
    """Every (container, key) in a JSON document, to mutate one of them."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            out += _paths(v)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            out += _paths(v)
    return out


@st.composite
def mutated(draw, doc):
    """`doc` (a deep copy) with one to three values replaced by random JSON
    or removed: near-valid inputs, where loaders' checks are tested hardest."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        container, key = draw(st.sampled_from(paths))
        if isinstance(container, dict) and draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(json_values)
    return doc


@st.composite
def byte_mutated(draw, raw: bytes):
    """`raw` truncated, with bytes flipped, or with a span replaced."""
    data = bytearray(raw)
    how = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if how == "truncate":
        return bytes(data[:draw(st.integers(0, len(data)))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    i = draw(st.integers(0, len(data)))
    return bytes(data[:i]) + draw(st.binary(max_size=40)) + bytes(data[i + draw(st.integers(0, 40)):])


def _dump(doc) -> str:
    return json.dumps(doc, allow_nan=True)


# -- trace metadata and Parquet tables ----------------------------------------------------------

@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    return metrics_trace(tmp_path_factory.mktemp("prop") / "t", duration_s=2.0, waits_us=list(range(1, 50)))


@pytest.fixture(scope="module")
def good_metadata(trace_dir):
    return json.loads((trace_dir / "metadata.json").read_text())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_trace_metadata_mutations(trace_dir, good_metadata, data):
    """Whatever Trace.open accepts, every consumer of the metadata (analyze's
    metrics and text, the DVFS demand replay) can use."""
    from aios_lab.analysis.metrics import trace_metrics
    from aios_lab.analysis.report import format_metrics
    from aios_lab.dvfs.demand import from_trace

    doc = data.draw(mutated(good_metadata) | json_values)
    (trace_dir / "metadata.json").write_text(_dump(doc))
    try:
        tr = Trace.open(trace_dir)
        assert tr.metadata["status"] in ("complete", "truncated")
        format_metrics(trace_metrics(tr))
        from_trace(trace_dir)
    except TraceError:
        return
    finally:
        (trace_dir / "metadata.json").write_text(json.dumps(good_metadata))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=st.sampled_from(["switches", "task_intervals", "cpu_intervals"]))
def test_parquet_tables_mutations(trace_dir, data, table):
    """A damaged Parquet file under a valid or broken footer: Trace.open and the
    whole analysis either work or raise TraceError."""
    from aios_lab.analysis.metrics import trace_metrics

    path = trace_dir / f"{table}.parquet"
    good = path.read_bytes()
    path.write_bytes(data.draw(byte_mutated(good)))
    try:
        trace_metrics(Trace.open(trace_dir))
    except TraceError:
        pass
    finally:
        path.write_bytes(good)


# -- models -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_doc(tmp_path_factory):
    path = save_model(tmp_path_factory.mktemp("m") / "m.json", m.ModelFile(tree=small_tree(), training={}))
    return json.loads(path.read_text())


def _resigned(doc: dict) -> dict:
    import hashlib

    doc = dict(doc)
    doc.pop("sha256", None)
    doc["sha256"] = hashlib.sha256(m._canonical(doc)).hexdigest()
    return doc


@FAST
@given(data=st.data())
def test_model_mutations(tmp_path_factory, model_doc, data):
    """Mutated and re-signed (so the content checks, not the checksum, must
    catch it), or mangled bytes: a valid ModelFile or ModelError."""
    path = tmp_path_factory.getbasetemp() / "model-prop.json"
    doc = data.draw(mutated(model_doc))
    raw = _dump(_resigned(doc) if isinstance(doc, dict) else doc).encode()
    if data.draw(st.booleans()):
        raw = data.draw(byte_mutated(raw))
    path.write_bytes(raw)
    try:
        mf = load_model(path)
    except ModelError:
        return
    mf.validate()  # whatever loads is a tree the kernel can run as user space evaluates it
    X = np.zeros((3, MLLB_NR_FEATURES), dtype=np.int64)
    assert set(mf.predict(X).tolist()) <= {0, 1}


# -- frequency tables ---------------------------------------------------------------------------

@FAST
@given(data=st.data())
def test_frequency_table_mutations(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "table-prop.json"
    good = FreqTable.constant(512).to_dict()
    doc = data.draw(mutated(good) | json_values)
    path.write_text(_dump(doc))
    try:
        t = load_table(path)
    except ModelError:
        return
    assert t.perf.shape == (16, 4) and 1 <= t.perf.min() and t.perf.max() <= 1024


@FAST
@given(perf=st.integers(1, 1024))
def test_frequency_table_round_trip(tmp_path_factory, perf):
    path = tmp_path_factory.getbasetemp() / "table-rt.json"
    save_table(path, FreqTable.constant(perf))
    assert (load_table(path).perf == perf).all()


# -- manifests and workloads (TOML) -------------------------------------------------------------

toml_scalars = (st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10).map(json.dumps)
                | st.integers(-2 ** 70, 2 ** 70).map(str) | st.booleans().map(lambda b: str(b).lower())
                | st.sampled_from(["nan", "inf", "-inf", "1.5", "[1, 2]", '["a"]', "{}", '{ a = 1 }']))
MANIFEST_KEYS = ["name", "kind", "source", "struct_ops", "summary", "test_only", "requires", "tunables",
                 "ops_name", "topology", "stats", "model"]
GOOD_MANIFEST = {"name": '"p"', "kind": '"sched_ext"', "source": '"p.bpf.c"', "struct_ops": '"p_ops"'}


@st.composite
def toml_docs(draw, good: dict, keys: list[str], tables: list[str]):
    """Near-valid TOML: the good keys with some replaced or dropped, random
    keys added, and maybe a [table] section with random fields."""
    lines = {k: v for k, v in good.items() if not draw(st.booleans()) or draw(st.booleans())}
    for k in draw(st.lists(st.sampled_from(keys), max_size=3)):
        lines[k] = draw(toml_scalars)
    text = "".join(f"{k} = {v}\n" for k, v in lines.items())
    if draw(st.booleans()):
        sec = draw(st.sampled_from(tables))
        text += f"[{sec}]\n" + "".join(f"{k} = {draw(toml_scalars)}\n"
                                       for k in draw(st.lists(st.sampled_from(
                                           ["type", "default", "min", "max", "help", "max_len", "map",
                                            "enum", "kind", "slots_map", "ctl_map"]), max_size=4, unique=True)))
    if draw(st.integers(0, 9)) == 0:
        text = draw(byte_mutated(text.encode())).decode("latin-1")
    return text


@FAST
@given(text=toml_docs(GOOD_MANIFEST, MANIFEST_KEYS, ["tunables.x", "stats", "model", "requires", "topology"]))
def test_manifest_mutations(tmp_path_factory, text):
    d = tmp_path_factory.getbasetemp() / "manifest-prop"
    d.mkdir(exist_ok=True)
    (d / "p.bpf.c").write_text("")
    f = d / "manifest.toml"
    f.write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        pol = load_manifest(f)
    except PolicyError:
        return
    assert isinstance(pol.name, str) and isinstance(pol.test_only, bool) and isinstance(pol.requires, dict)
    for t in pol.tunables.values():
        t.parse(t.default)


@FAST
@given(text=toml_docs({"name": '"w"', "command": '"true"'}, ["name", "command", "requires", "timeout_s",
                                                            "summary", "prepare"], ["x"]))
def test_workload_mutations(tmp_path_factory, text):
    f = tmp_path_factory.getbasetemp() / "w-prop.toml"
    f.write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        w = load_workload(f)
    except WorkloadError:
        return
    assert isinstance(w.command, str) and w.command.strip() and all(isinstance(r, str) for r in w.requires)
    assert 0 < w.timeout_s <= 7 * 86400


# -- cpufreq state files ------------------------------------------------------------------------

GOOD_STATE = {"format": "aios-lab.freq-governor-state", "pid": 2 ** 22 + 7, "pid_start": "1", "saved_at": 1.0,
              "root": "/", "policies": [{"name": "policy0", "mode": "setspeed", "driver": "acpi-cpufreq",
                                         "governor": "schedutil", "setspeed_khz": None, "min_khz": 800000,
                                         "max_khz": 3000000}]}


@FAST
@given(doc=mutated(GOOD_STATE) | json_values)
def test_state_file_mutations(tmp_path_factory, doc):
    f = tmp_path_factory.getbasetemp() / "state-prop.json"
    f.write_text(_dump(doc))
    try:
        st_ = governor_state(f)
    except CpufreqError:
        return
    assert st_ is not None and all(n.startswith("policy") for n in st_["policies"])


# -- the quantiser ------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32 - 1), scale=st.sampled_from([10, 1000, 2 ** 24, 10 ** 9]),
       depth=st.integers(1, 10), signed=st.booleans())
def test_quantised_and_float_trees_agree_on_every_input(seed, scale, depth, signed):
    """Trees fitted on random integer data at every magnitude (below and far
    beyond float32's exact range): the integer tree the kernel walks answers
    as the float tree on every integer input BPF can produce (clamped to the
    feature bounds), probed on both sides of every threshold."""
    rng = np.random.default_rng(seed)
    lo_b, hi_b = feature_bounds()
    lo = -scale if signed else 0
    X = rng.integers(lo, scale + 1, size=(400, MLLB_NR_FEATURES))
    X = np.clip(X, lo_b, hi_b)
    y = (rng.random(400) < 0.5).astype(int)
    assume(len(set(y)) == 2)
    est = TreeModel(max_depth=depth, min_samples_leaf=1).fit(X, y)
    q = est.quantize()
    q.validate()
    t = est.estimator_.tree_
    probes = [rng.integers(lo, scale + 1, size=(200, MLLB_NR_FEATURES))]
    for i in np.flatnonzero(t.children_left >= 0):
        base = X[rng.integers(0, len(X), 8)].copy()
        for off in (-2, -1, 0, 1, 2):
            rows = base.copy()
            rows[:, t.feature[i]] = int(np.floor(t.threshold[i])) + off
            probes.append(rows)
    P = np.clip(np.concatenate(probes), lo_b, hi_b)
    assert (q.predict(P) == est.predict(P)).all()
