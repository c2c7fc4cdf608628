"""policies/freq/intf.h, the compiled object's BTF and aios_lab.dvfs.table
describe one table layout.

User space reads the freq policy's structs and limits from BTF; these tests
check them against the host C compiler reading the same header, and the
table constants against the Python table module, so that a change on one
side without the other fails here rather than in the kernel.
"""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from aios_lab import build
from aios_lab.bpf import Btf
from aios_lab.dvfs import table as tbl
from aios_lab.sched import policy
from aios_lab.sched.kinds.freq_table.slots import (CPU_STRUCT, CTL_STRUCT, LIMIT_ENUM, TABLE_STRUCT, TASK_STRUCT, TableLimits,
                                      default_limits)

# intf.h uses the kernel's type names, which vmlinux.h gives BPF.
PRELUDE = "#include <stdint.h>\ntypedef uint32_t u32;\ntypedef uint64_t u64;\n"


@pytest.fixture(scope="module")
def freq():
    return policy.get("freq")


@pytest.fixture(scope="module")
def btf(freq):
    obj = build.object_path(freq.source_path)
    assert obj.exists(), f"{obj} is not built: run `aios-lab build` (make test does)"
    with Btf.parse(obj) as b:
        yield b


def _c_facts(tmp_path: Path, folder: Path, exprs: list[str]) -> list[int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a host C compiler is needed for the layout check"
    (tmp_path / "prelude.h").write_text(PRELUDE)
    body = "\n".join(f'    printf("%lld\\n", (long long)({e}));' for e in exprs)
    src = tmp_path / "facts.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "prelude.h"\n#include "intf.h"\n'
                   f"int main(void) {{\n{body}\n    return 0;\n}}\n")
    exe = tmp_path / "facts"
    subprocess.run([cc, f"-I{tmp_path}", f"-I{folder}", str(src), "-o", str(exe)], check=True)
    return [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]


def test_limits_match_the_table_module(btf):
    limit = btf.enum(LIMIT_ENUM)
    assert limit["FREQ_UTIL_BUCKETS"] == tbl.UTIL_BUCKETS
    assert limit["FREQ_RQ_BUCKETS"] == tbl.RQ_BUCKETS
    assert limit["FREQ_PERF_MAX"] == tbl.PERF_MAX == tbl.UTIL_MAX
    # BPF buckets with a shift, the table module with a division: the same thing.
    assert tbl.UTIL_MAX >> limit["FREQ_UTIL_SHIFT"] == tbl.UTIL_BUCKETS
    assert all(tbl.util_bucket(u) == min(u >> limit["FREQ_UTIL_SHIFT"], tbl.UTIL_BUCKETS - 1) for u in range(1025))
    assert TableLimits.from_enum(limit) == default_limits()


def test_limits_and_stats_match_the_c_header(btf, freq, tmp_path):
    limit = btf.enum(LIMIT_ENUM)
    stat = btf.enum(freq.stats.enum)
    facts = _c_facts(tmp_path, freq.folder, list(limit) + list(stat))
    assert facts == list(limit.values()) + list(stat.values())
    counted = [n.removeprefix(freq.stats.prefix) for n in stat if n.startswith(freq.stats.prefix)]
    assert sorted(counted) == sorted(freq.stats.help), "every stat needs a description in manifest.toml"


@pytest.mark.parametrize("struct", [TABLE_STRUCT, CTL_STRUCT, CPU_STRUCT, TASK_STRUCT])
def test_struct_mirrors_match_the_c_header(btf, freq, tmp_path, struct):
    ctype = btf.ctypes_type(struct)
    names = [m.name for m in btf.struct(struct).members]
    facts = _c_facts(tmp_path, freq.folder, [f"sizeof(struct {struct})"]
                     + [f"offsetof(struct {struct}, {n})" for n in names])
    assert facts[0] == ctypes.sizeof(ctype)
    assert facts[1:] == [getattr(ctype, n).offset for n in names]


def test_the_per_task_and_per_program_state_are_the_stated_sizes(btf):
    # docs/freq-policy.md and freq.bpf.c state the per-task memory as this struct per task,
    # and the per-program priors as at most FREQ_MAX_PROGRAMS entries of a comm and this struct
    assert ctypes.sizeof(btf.ctypes_type(TASK_STRUCT)) == 80
    assert ctypes.sizeof(btf.ctypes_type("freq_prior")) == 16
    assert btf.enum(LIMIT_ENUM)["FREQ_MAX_PROGRAMS"] == 1024 and btf.enum(LIMIT_ENUM)["FREQ_COMM_LEN"] == 16
    assert default_limits().no_cpu == btf.enum(LIMIT_ENUM)["FREQ_NO_CPU"] == 0xFFFFFFFF   # u32 -1


def test_the_table_slot_holds_the_whole_table(btf):
    t = btf.ctypes_type(TABLE_STRUCT)()
    assert len(t.perf) == tbl.UTIL_BUCKETS and len(t.perf[0]) == tbl.RQ_BUCKETS
    t.perf[tbl.UTIL_BUCKETS - 1][tbl.RQ_BUCKETS - 1] = tbl.PERF_MAX  # u32: holds the largest level
    assert t.perf[tbl.UTIL_BUCKETS - 1][tbl.RQ_BUCKETS - 1] == tbl.PERF_MAX
