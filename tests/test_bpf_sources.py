"""Where things live in the BPF sources: kfunc declarations only in
bpf/include/aios/scx.bpf.h, kernel drift handled only in
bpf/include/aios/core_fixes.bpf.h, each fix there naming what it follows."""
from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO

INCLUDE = REPO / "bpf" / "include" / "aios"
SCX_HEADER = INCLUDE / "scx.bpf.h"
CORE_FIXES = INCLUDE / "core_fixes.bpf.h"
TREES = ("bpf", "policies", "tests/data")
# What only the CO-RE fixes header may use: existence tests and struct flavours.
DRIFT = re.compile(r"bpf_core_field_exists|bpf_core_type_exists|bpf_core_enum_value_exists|"
                   r"bpf_ksym_exists|preserve_access_index")
# A fix names a kernel version ("Linux 5.14", "after 6.12") or a config option.
NAMES_CHANGE = re.compile(r"\b\d\.\d+\b|CONFIG_[A-Z_]+")


def _sources() -> list[Path]:
    return sorted(p for t in TREES for p in (REPO / t).rglob("*") if p.suffix in (".c", ".h"))


def _code(path: Path) -> str:
    return re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)   # comments may mention anything


# The verifier's corpus policy that calls a kfunc the kernel lacks must
# declare it itself: scx.bpf.h declares only what a kernel we run has.
KFUNC_ON_PURPOSE = {"tests/data/policies/corpus/oldapi/oldapi.bpf.c"}


def test_kfuncs_are_declared_only_in_the_scx_header():
    declared = {p.relative_to(REPO).as_posix() for p in _sources() if "__ksym" in _code(p)}
    assert declared - KFUNC_ON_PURPOSE == {SCX_HEADER.relative_to(REPO).as_posix()}


def test_kernel_drift_is_handled_only_in_core_fixes():
    users = {p.relative_to(REPO).as_posix() for p in _sources() if DRIFT.search(_code(p))}
    assert users == {CORE_FIXES.relative_to(REPO).as_posix()}


def test_every_core_fix_names_the_kernel_change():
    text = CORE_FIXES.read_text()
    # A comment directly followed by a flavour struct or a helper introduces a fix.
    intros = re.findall(r"/\*((?:(?!\*/).)*)\*/\s*\n(?:struct \w+___\w+|static __always_inline)", text, flags=re.S)
    assert len(intros) >= 5
    for comment in intros:
        assert NAMES_CHANGE.search(comment), f"a fix in {CORE_FIXES.name} names no kernel change: {comment!r}"
    helpers = re.findall(r"static __always_inline [\w\s*]+?\b(aios_\w+)\(", text)
    assert {"aios_task_state", "aios_task_cpu", "aios_dsq_insert", "aios_dsq_move_to_local"} <= set(helpers)
