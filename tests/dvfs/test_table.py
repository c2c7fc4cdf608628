"""The learned frequency table (dvfs.table): validation, the model file, the
state buckets and the perf -> frequency / cpuperf mappings the backends use.

No root, no kernel: pure Python on in-memory arrays and files under tmp_path.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aios_lab.dvfs import table as tbl
from aios_lab.dvfs.table import (FORMAT, FORMAT_VERSION, PERF_MAX, RQ_BUCKETS, UTIL_BUCKETS, FreqTable,
                                 cpuperf_request, freq_for_perf, load_table, rq_bucket, save_table,
                                 util_bucket)
from aios_lab.errors import ModelError


def _graded(version: int = 1) -> FreqTable:
    """A table whose every cell differs: perf = 64 u + 16 q + 1."""
    u, r = np.meshgrid(np.arange(UTIL_BUCKETS), np.arange(RQ_BUCKETS), indexing="ij")
    return FreqTable(64 * u + 16 * r + 1, method="test", meta={"note": "graded"}, version=version)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


# -- FreqTable validation -----------------------------------------------------------------

def test_layout_constants_match_the_bpf_side():
    # policies/freq/intf.h: FREQ_UTIL_BUCKETS 16, FREQ_RQ_BUCKETS 4 (tests/sched/kinds/freq_table/test_layout.py checks the header)
    assert (UTIL_BUCKETS, RQ_BUCKETS, PERF_MAX) == (16, 4, 1024)


def test_a_good_table_is_stored_as_int64_and_looked_up_by_bucket():
    t = _graded()
    assert t.perf.dtype == np.int64 and t.perf.shape == (16, 4)
    assert t.lookup(0, 0) == 1
    assert t.lookup(1023, 7) == 64 * 15 + 16 * 3 + 1
    assert t.lookup(130, 2) == 64 * 2 + 16 * 2 + 1


def test_integral_floats_are_accepted_and_become_integers():
    t = FreqTable(np.full((16, 4), 512.0))
    assert t.perf.dtype == np.int64 and int(t.perf[3, 1]) == 512


@pytest.mark.parametrize("perf,words", [
    (np.ones((8, 4), dtype=np.int64), "shape"),
    (np.ones((16, 4, 1), dtype=np.int64), "shape"),
    (np.ones(64, dtype=np.int64), "shape"),
    (np.full((16, 4), np.nan), "nan"),
    (np.full((16, 4), np.inf), "infinite"),
    (np.full((16, 4), 512.5), "non-integer"),
    (np.zeros((16, 4), dtype=np.int64), "outside the perf range"),
    (np.full((16, 4), 1025, dtype=np.int64), "outside the perf range"),
    (np.full((16, 4), -3, dtype=np.int64), "outside the perf range"),
    (np.ones((16, 4), dtype=bool), "bool"),
    (np.full((16, 4), "512"), "not integers"),
])
def test_bad_arrays_raise_model_error_naming_the_problem(perf, words):
    with pytest.raises(ModelError) as ei:
        FreqTable(perf)
    assert words in str(ei.value).lower()


def test_one_bad_cell_is_enough():
    p = _graded().perf.copy()
    p[7, 2] = 1025
    with pytest.raises(ModelError, match="1..1025"):
        FreqTable(p)
    p[7, 2] = 0
    with pytest.raises(ModelError, match="0..1009"):
        FreqTable(p)


def test_version_must_be_positive():
    with pytest.raises(ModelError, match="version"):
        FreqTable(np.ones((16, 4), dtype=np.int64), version=0)


def test_constant_table():
    t = FreqTable.constant(700)
    assert t.method == "constant" and np.all(t.perf == 700)
    with pytest.raises(ModelError):
        FreqTable.constant(2000)


# -- from_dict: what a model file may hold -------------------------------------------------

def _doc(**over):
    d = _graded().to_dict()
    d.update(over)
    return d


def test_to_dict_names_the_format_and_layout():
    d = _graded(version=9).to_dict()
    assert d["format"] == FORMAT and d["format_version"] == FORMAT_VERSION
    assert (d["util_buckets"], d["rq_buckets"], d["version"], d["method"]) == (16, 4, 9, "test")
    assert d["perf"][15][3] == 64 * 15 + 48 + 1 and isinstance(d["perf"][0][0], int)


@pytest.mark.parametrize("doc,words", [
    ([1, 2, 3], "not an aios-lab frequency table"),
    ("a string", "not an aios-lab frequency table"),
    (None, "not an aios-lab frequency table"),
    (_doc(format="aios-lab.lb-tree"), "not an aios-lab frequency table"),
    ({k: v for k, v in _doc().items() if k != "format"}, "not an aios-lab frequency table"),
    (_doc(format_version=2), "format_version 2"),
    (_doc(format_version="1"), "format_version '1'"),
    ({k: v for k, v in _doc().items() if k != "format_version"}, "format_version none"),
    (_doc(perf="512"), "list of equal-length lists"),
    (_doc(perf=[1, 2, 3]), "list of equal-length lists"),
    (_doc(perf=[[1, 2, 3, 4]] * 15 + [[1, 2, 3]]), "list of equal-length lists"),
    (_doc(perf=[[True] * 4] * 16), "not a number"),
    (_doc(perf=[[512] * 3 + [False]] * 16), "not a number"),
    (_doc(perf=[["512"] * 4] * 16), "not a number"),
    (_doc(perf=[[None] * 4] * 16), "not a number"),
    (_doc(perf=[[512] * 4] * 8), "shape"),
    (_doc(perf=[]), "shape"),
    (_doc(perf=[[0] * 4] * 16), "outside the perf range"),
    (_doc(perf=[[1025] * 4] * 16), "outside the perf range"),
    (_doc(perf=[[512.25] * 4] * 16), "non-integer"),
    (_doc(perf=[[math.nan] * 4] * 16), "nan"),
])
def test_from_dict_rejects_with_model_error(doc, words):
    with pytest.raises(ModelError) as ei:
        FreqTable.from_dict(doc, where="t.json")
    assert words in str(ei.value).lower()


def test_from_dict_hints_at_retraining():
    with pytest.raises(ModelError) as ei:
        FreqTable.from_dict(_doc(format_version=99))
    assert "train freq" in ei.value.hint


# -- save / load --------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    t = _graded(version=42)
    t.meta = {"lambda": 4.0, "train": ["a", "b"], "simulated": True}
    out = save_table(tmp_path / "freq.json", t)
    assert out == tmp_path / "freq.json"
    back = load_table(out)
    assert np.array_equal(back.perf, t.perf) and back.perf.dtype == np.int64
    assert (back.method, back.version, back.meta) == ("test", 42, t.meta)
    assert json.loads(out.read_text())["format"] == FORMAT
    assert _leftovers(tmp_path) == []


def test_save_replaces_an_older_table(tmp_path):
    p = tmp_path / "freq.json"
    save_table(p, FreqTable.constant(100))
    save_table(p, FreqTable.constant(900))
    assert np.all(load_table(p).perf == 900)
    assert _leftovers(tmp_path) == []


def test_save_with_nan_in_meta_fails_and_keeps_the_old_file(tmp_path):
    p = tmp_path / "freq.json"
    save_table(p, FreqTable.constant(300))
    before = p.read_bytes()
    bad = FreqTable.constant(800)
    bad.meta = {"energy_j": math.nan}
    with pytest.raises(ModelError, match="NaN or infinity"):
        save_table(p, bad)
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_save_into_a_missing_folder_is_a_model_error(tmp_path):
    p = tmp_path / "nowhere" / "freq.json"
    with pytest.raises(ModelError, match="cannot write frequency table") as ei:
        save_table(p, FreqTable.constant(300))
    assert "folder" in ei.value.hint
    assert not p.parent.exists()


def test_save_failing_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    """The write itself fails after the temporary file exists (fsync, rename)."""
    import os

    p = tmp_path / "freq.json"
    save_table(p, FreqTable.constant(300))
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ModelError, match="No space left"):
        save_table(p, FreqTable.constant(800))
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert np.all(load_table(p).perf == 300)


def test_save_validates_a_table_mutated_after_construction(tmp_path):
    t = FreqTable.constant(300)
    t.perf = np.zeros((16, 4), dtype=np.int64)
    with pytest.raises(ModelError, match="outside the perf range"):
        save_table(tmp_path / "freq.json", t)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [0, 1, 10, 200, -20, -2])
def test_a_truncated_file_is_a_model_error(tmp_path, cut):
    p = tmp_path / "freq.json"
    save_table(p, _graded())
    text = p.read_text()
    p.write_text(text[:cut] if cut >= 0 else text[:len(text) + cut])
    with pytest.raises(ModelError, match="truncated or corrupt|not an aios-lab"):
        load_table(p)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_table(tmp_path / "absent.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelError):
        load_table(tmp_path / "bin.json")
    with pytest.raises(ModelError):
        load_table(tmp_path)  # a folder


def test_nan_literal_in_a_file_is_rejected(tmp_path):
    p = tmp_path / "freq.json"
    d = _graded().to_dict()
    text = json.dumps(d).replace('"perf": [[1, ', '"perf": [[NaN, ')
    assert "NaN" in text
    p.write_text(text)
    with pytest.raises(ModelError, match="NaN"):
        load_table(p)


@pytest.mark.parametrize("over", [
    {"version": "x"},
    {"version": None},
    {"meta": [1, 2]},
    {"meta": "ab"},
    {"perf": [[10 ** 400] * 4] * 16},
], ids=["version-str", "version-null", "meta-list", "meta-str", "perf-huge-int"])
def test_corrupt_fields_in_a_file_give_model_error(tmp_path, over):
    p = tmp_path / "freq.json"
    p.write_text(json.dumps(_doc(**over)))
    with pytest.raises(ModelError):
        load_table(p)


def test_unencodable_meta_is_a_model_error(tmp_path):
    t = FreqTable.constant(300)
    t.meta = {"episodes": np.int64(3)}
    with pytest.raises(ModelError):
        save_table(tmp_path / "freq.json", t)


# -- buckets ------------------------------------------------------------------------------

@pytest.mark.parametrize("u,b", [(0, 0), (63, 0), (64, 1), (127, 1), (128, 2), (1023, 15), (1024, 15),
                                 (-1, 0), (-5000, 0), (1025, 15), (10 ** 6, 15), (63.9, 0), (64.0, 1)])
def test_util_bucket_edges(u, b):
    assert util_bucket(u) == b
    assert isinstance(util_bucket(u), int)


def test_util_bucket_is_the_bpf_integer_rule():
    u = np.arange(-100, 1200)
    want = np.minimum(np.clip(u, 0, None) >> 6, 15)
    got = util_bucket(u)
    assert isinstance(got, np.ndarray) and np.array_equal(got, want)
    for x in range(0, 1025):
        assert util_bucket(x) == min(x >> 6, 15)


@pytest.mark.parametrize("q,b", [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3), (1000, 3), (-1, 0)])
def test_rq_bucket_edges(q, b):
    assert rq_bucket(q) == b


def test_rq_bucket_is_min_q_3():
    q = np.arange(0, 50)
    assert np.array_equal(rq_bucket(q), np.minimum(q, 3))


# -- cpuperf_request / freq_for_perf ------------------------------------------------------

@pytest.mark.parametrize("p,want", [(1024, 820), (1, 1), (640, 512), (5, 4), (4, 4), (6, 5)])
def test_cpuperf_request_values(p, want):
    assert cpuperf_request(p) == want


def test_cpuperf_request_is_ceil_of_perf_over_headroom_for_every_perf():
    for p in range(1, PERF_MAX + 1):
        r = cpuperf_request(p)
        assert 1 <= r <= PERF_MAX
        assert 1.25 * r >= p, p                      # schedutil lands at or above the target
        assert r == 1 or 1.25 * (r - 1) < p, p       # and one step less would land below it
        assert r == math.ceil(p / 1.25)


def test_cpuperf_request_clamps():
    assert cpuperf_request(0) == cpuperf_request(1) == 1
    assert cpuperf_request(5000) == cpuperf_request(1024) == 820


@pytest.mark.parametrize("cap", [160, 250, 512, 620, 1000, 1024])
def test_cpuperf_request_lands_at_the_share_of_the_cpus_own_top_frequency(cap):
    # schedutil on a CPU of capacity `cap`: freq = 1.25 x max_freq x request / cap,
    # so the share of the CPU's own top frequency is 1.25 x request / cap.
    for p in range(1, PERF_MAX + 1):
        r = cpuperf_request(p, cap)
        assert 1 <= r <= PERF_MAX
        assert 1.25 * r / cap >= p / PERF_MAX - 1e-12, (p, r)
        assert r == 1 or 1.25 * (r - 1) / cap < p / PERF_MAX, (p, r)   # the least that gets there
    assert cpuperf_request(1024, cap) == math.ceil(cap / 1.25)


def test_cpuperf_request_reads_an_invalid_capacity_as_full_as_bpf_does():
    for cap in (0, -5, 1025, 4096):
        assert cpuperf_request(700, cap) == cpuperf_request(700) == 560


AVAIL = [2802000, 500000, 1426000, 851000]  # unsorted on purpose


@pytest.mark.parametrize("perf,khz", [
    (1024, 2802000),
    (1, 500000),
    (182, 500000),         # 182/1024 x 2.802 GHz = 498 MHz
    (183, 851000),         # 500.7 MHz: just above the lowest
    (311, 851000),         # 851.0 MHz - a hair below 851000: at or above -> 851000
    (312, 1426000),
    (600, 2802000),        # 1641.8 MHz: above 1426 MHz
    (0, 500000),           # clamped to 1
    (4096, 2802000),       # clamped to 1024
])
def test_freq_for_perf_is_lowest_at_or_above(perf, khz):
    assert freq_for_perf(perf, AVAIL) == khz
    assert khz >= min(max(perf, 1), 1024) / 1024 * max(AVAIL) - 1e-6


def test_freq_for_perf_exact_share_is_at_or_above():
    # 512/1024 of 2000000 is exactly 1000000: that frequency, not the next
    assert freq_for_perf(512, [500000, 1000000, 2000000]) == 1000000
    assert freq_for_perf(513, [500000, 1000000, 2000000]) == 2000000


def test_freq_for_perf_needs_frequencies():
    with pytest.raises(ModelError, match="no available frequencies"):
        freq_for_perf(512, [])


def test_module_exports():
    assert tbl.SCHEDUTIL_HEADROOM == 1.25
