"""A walk over every CLI command with hostile arguments (issue 21).

For every option that takes a value the walker derives hostile values from
its type (NaN, infinity, negative numbers, non-numbers, unknown choices; a
FIFO, a directory and, as root, a character device made in tmp for paths)
and asserts: no traceback, a documented non-zero exit code, one line on
output, nothing changed on disk. The commands' heavy bodies (VM boots,
benchmarks, training, collection) are replaced by a tripwire: a hostile
argument must be refused before them, so reaching one fails the test.
A structural check fails when a new float option is not `Finite` or an
integer option has no range.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aios_lab import exit_codes
from aios_lab.cli import main
from aios_lab.cli.types import Finite

from tests.helpers.mllb import decisions, write_decisions
from tests.helpers.traces import metrics_trace

HOSTILE_CODES = {exit_codes.USAGE, exit_codes.BAD_INPUT, exit_codes.ENVIRONMENT, exit_codes.COMMAND_FAILED}

# Library entry points behind each command's validation: a hostile argument
# must never get this far.
TRIPWIRES = ["aios_lab.bench.demo.run_demo", "aios_lab.bench.run.bench_schedulers", "aios_lab.vm.runner.run",
             "aios_lab.vm.runner.build_vng_argv", "aios_lab.telemetry.collect.collect",
             "aios_lab.sched.deploy_loop.DeployLoop.run", "aios_lab.dvfs.learners.make",
             "aios_lab.mllb.train.train", "aios_lab.dvfs.bounds.yardsticks", "aios_lab.build.build_all",
             "aios_lab.bpf_provision.provision", "aios_lab.cpufreq.governor_loop.run_table_governor"]


def _leaves(group: click.Group, path=()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, path + (name,))
        else:
            yield path + (name,), cmd


LEAVES = list(_leaves(main))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    w = {"root": root, "trace": metrics_trace(root / "trace", duration_s=2.0, waits_us=list(range(1, 40))),
         "trace2": metrics_trace(root / "trace-2", duration_s=2.0, waits_us=list(range(1, 40)))}
    write_decisions(root / "dec", decisions(200))
    w["dec"] = root / "dec"
    os.mkfifo(root / "fifo")
    (root / "dir").mkdir()
    (root / "dir" / "x").write_text("")
    w["fifo"], w["dir"] = root / "fifo", root / "dir"
    if os.geteuid() == 0:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers, in tmp
        w["chardev"] = root / "null"
    (root / "cwd").mkdir()
    return w


def _base(path: tuple, w) -> list[str]:
    """Arguments that make each command otherwise valid and cheap."""
    t, t2, out = str(w["trace"]), str(w["trace2"]), str(w["root"] / "cwd" / "out")
    return {
        ("analyze",): [t], ("compare",): [t, t2], ("export", "perfetto"): [t, "-o", out],
        ("train", "lb"): ["--trace", str(w["dec"]), "--out", out],
        ("train", "freq"): ["--trace", t, "--out", out],
        ("freq", "run"): ["--model", str(w["root"] / "no-table.json"), "--root", str(w["root"]),
                          "--proc-root", str(w["root"])],
        ("freq", "bound"): ["--trace", t, "--no-lp"],
        ("freq", "status"): ["--root", str(w["root"])],
        ("freq", "restore"): ["--state-file", str(w["root"] / "no-state.json"), "--root", str(w["root"])],
        ("deploy",): ["fifo"], ("vm", "run"): ["--", "true"],
    }.get(path, [])


def _hostile(param: click.Parameter, w) -> list[str]:
    t = param.type
    if isinstance(t, (click.FloatRange, click.types.FloatParamType)):
        vals = ["nan", "inf", "-inf", "x", ""]
        if getattr(t, "min", None) is not None and t.min >= 0:
            vals.append("-1")
        return vals
    if isinstance(t, (click.IntRange, click.types.IntParamType)):
        vals = ["x", "1e999", "nan", ""]
        if getattr(t, "min", None) is not None and t.min >= 0:
            vals.append("-1")
        return vals
    if isinstance(t, click.Choice):
        return ["nope", ""]
    if isinstance(t, click.Path):
        # A directory is hostile only where a file belongs (folders of results may exist).
        return ([str(w["fifo"])] + ([str(w["dir"])] if t.file_okay else [])
                + ([str(w["chardev"])] if "chardev" in w else []))
    return []


def _cases(w):
    for path, cmd in LEAVES:
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and p.name not in ("help",):
                for v in _hostile(p, w):
                    base = _base(path, w)
                    cut = base.index("--") if "--" in base else len(base)  # options go before a COMMAND
                    yield path, [*base[:cut], p.opts[0], v, *base[cut:]]
            if isinstance(p, click.Argument) and isinstance(p.type, click.Path):
                base = _base(path, w)
                rest = base[p.nargs if p.nargs > 0 else 1:] if base else []
                for v in _hostile(p, w) + [""]:
                    yield path, [v, *rest]


def _snapshot(root: Path) -> dict:
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(p)
        out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_rdev,
                       hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None)
    return out


def test_every_command_refuses_hostile_arguments(world, monkeypatch):
    import importlib

    for target in TRIPWIRES:
        mod, _, attr = target.rpartition(".")
        try:
            obj = importlib.import_module(mod)
        except ImportError:  # a class attribute: module.Class.method
            mod, _, cls = mod.rpartition(".")
            obj = getattr(importlib.import_module(mod), cls)

        def tripwire(*a, _t=target, **k):
            raise AssertionError(f"a hostile argument reached {_t}")
        monkeypatch.setattr(obj, attr, tripwire)
    monkeypatch.chdir(world["root"] / "cwd")
    monkeypatch.setenv("AIOS_LAB_FREQ_STATE", str(world["root"] / "state.json"))
    before = _snapshot(world["root"])
    cases = list(_cases(world))
    assert len(cases) > 150 and {c[0] for c in cases} >= {("analyze",), ("collect",), ("deploy",), ("vm", "run"),
                                                          ("train", "lb"), ("freq", "bound"), ("demo",)}
    bad = []
    for path, args in cases:
        res = CliRunner().invoke(main, [*path, *args])
        lines = res.output.splitlines()
        ok = (res.exit_code in HOSTILE_CODES and isinstance(res.exception, SystemExit)
              and "Traceback" not in res.output and len(lines) == 1 and lines[0].startswith("Error: "))
        if not ok:
            bad.append(f"{' '.join(path)} {args!r}: exit {res.exit_code}, {res.output!r}, {res.exception!r}")
    assert not bad, f"{len(bad)} of {len(cases)} hostile invocations misbehaved:\n" + "\n".join(bad[:30])
    assert _snapshot(world["root"]) == before


def test_every_number_option_is_finite_and_ranged():
    """A new float option must be Finite (click's FloatRange lets NaN through)
    and an integer option must have a range."""
    lax = []
    for path, cmd in LEAVES:
        for p in cmd.params:
            if isinstance(p.type, click.types.FloatParamType) and not isinstance(p.type, Finite):
                lax.append(f"{' '.join(path)} {p.opts[0]}: float, not Finite")
            if isinstance(p.type, click.types.IntParamType) and not isinstance(p.type, click.IntRange):
                lax.append(f"{' '.join(path)} {p.opts[0]}: integer without a range")
    assert not lax, lax
