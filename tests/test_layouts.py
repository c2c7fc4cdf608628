"""Layouts shared by BPF and Python come from one C header each.

Python never declares them by hand: it builds ctypes types and enum maps from
the compiled object's BTF. These tests check that mirror against the host C
compiler reading the same header, for every object we ship.
"""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from aios_lab import build, paths
from aios_lab.sched import policy
from aios_lab.bpf import Btf, check_ctypes_layout

from tests.helpers import DATA

ROOT = paths.project_root()
INCLUDE = ROOT / "bpf" / "include"

OBJECTS_WITH_EXIT_INFO = [ROOT / "policies/fifo/fifo.bpf.c", DATA / "policies" / "stall" / "stall.bpf.c"]


def _obj(src: Path) -> Path:
    out = build.object_path(src)
    assert out.exists(), f"{out} is not built: run `aios-lab build` (make test does)"
    return out


def _c_facts(tmp_path: Path, includes: list[str], exprs: list[str], incdirs: list[Path]) -> list[int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a host C compiler is needed for the layout check"
    src = tmp_path / "facts.c"
    body = "\n".join(f'    printf("%lld\\n", (long long)({e}));' for e in exprs)
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n"
                   + "".join(f'#include "{h}"\n' for h in includes)
                   + f"int main(void) {{\n{body}\n    return 0;\n}}\n")
    exe = tmp_path / "facts"
    subprocess.run([cc, *[f"-I{d}" for d in incdirs], str(src), "-o", str(exe)], check=True)
    return [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]


@pytest.mark.parametrize("src", OBJECTS_WITH_EXIT_INFO, ids=lambda p: p.parent.name)
def test_exit_info_mirror_matches_the_c_header(src, tmp_path):
    with Btf.parse(_obj(src)) as btf:
        layout = btf.struct("aios_exit_info")
        ctype = btf.ctypes_type("aios_exit_info")
    check_ctypes_layout(ctype, layout)
    names = [m.name for m in layout.members]
    exprs = ["sizeof(struct aios_exit_info)"] + [f"offsetof(struct aios_exit_info, {n})" for n in names]
    facts = _c_facts(tmp_path, ["aios/exit_info.h"], exprs, [INCLUDE])
    assert facts[0] == ctypes.sizeof(ctype) == layout.size
    assert facts[1:] == [getattr(ctype, n).offset for n in names]


def test_fifo_stats_enum_matches_the_c_header(tmp_path):
    fifo = policy.get("fifo")
    with Btf.parse(_obj(fifo.source_path)) as btf:
        enum = btf.enum(fifo.stats.enum)
    facts = _c_facts(tmp_path, ["intf.h"], list(enum), [fifo.folder])
    assert facts == list(enum.values())
    counted = [n.removeprefix(fifo.stats.prefix) for n in enum if n.startswith(fifo.stats.prefix)]
    assert sorted(counted) == sorted(fifo.stats.help), "every stat needs a description in manifest.toml"


def test_counter_enum_matches_the_c_header(tmp_path):
    with Btf.parse(_obj(ROOT / "bpf" / "counters.bpf.c")) as btf:
        enum = btf.enum("aios_counter")
    assert _c_facts(tmp_path, ["aios/counters.h"], list(enum), [INCLUDE]) == list(enum.values())


def test_prog_info_offsets_match_the_uapi_header(tmp_path):
    from aios_lab.bpf.object import PROG_INFO_OFFSETS, PROG_INFO_SIZE

    if not Path("/usr/include/linux/bpf.h").exists():
        pytest.skip("no linux/bpf.h (linux-libc-dev)")
    names = list(PROG_INFO_OFFSETS)
    facts = _c_facts(tmp_path, ["linux/bpf.h"], [f"offsetof(struct bpf_prog_info, {n})" for n in names]
                     + ["sizeof(struct bpf_prog_info) >= " + str(PROG_INFO_SIZE)], [])
    assert facts[:-1] == [PROG_INFO_OFFSETS[n][0] for n in names]
    assert facts[-1] == 1
