"""The CLI's conventions: -h is --help, every command that reports has
--json, intervals and durations are seconds (old millisecond spellings warn),
and every AIOS_LAB_* variable the code reads is documented."""
from __future__ import annotations

import json
import re

import click
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.environment import VARIABLES

from tests.helpers import REPO

# Commands whose output is the guest command's own (nothing of ours to put in JSON).
NO_JSON = {("vm", "run"): "streams the guest command's output",
           ("vm", "shell"): "an interactive shell",
           ("mcp",): "speaks MCP (JSON-RPC) on stdio; it reports nothing itself"}


def _commands(group=main, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def _opts(cmd) -> list[str]:
    return [o for p in cmd.params if not getattr(p, "hidden", False) for o in getattr(p, "opts", [])]


def test_dash_h_is_help_everywhere():
    for path, _ in [((), main), *_commands()]:
        short = CliRunner().invoke(main, [*path, "-h"])
        assert short.exit_code == 0 and short.output == CliRunner().invoke(main, [*path, "--help"]).output, path


def test_every_reporting_command_has_json():
    missing = [" ".join(p) for p, cmd in _commands() if p not in NO_JSON and "--json" not in _opts(cmd)]
    assert not missing, f"commands without --json: {missing}"


def test_no_visible_option_takes_milliseconds():
    ms = [(" ".join(p), o) for p, cmd in _commands() for o in _opts(cmd) if o.endswith("-ms")]
    assert not ms, f"options in milliseconds (use seconds): {ms}"


def test_old_millisecond_spelling_warns_and_converts(tmp_path):
    res = CliRunner().invoke(main, ["freq", "bound", "--lookahead-ms", "300", "--lateness-ms", "2",
                                    "--max-opp", "0", "--no-lp", "--json", "--trace", str(tmp_path)])
    assert "--lookahead-ms is deprecated; use --lookahead in seconds (--lookahead 0.3)" in res.output
    res = CliRunner().invoke(main, ["collect", "--interval", "500", "--no-bpf"])
    assert res.exit_code == 2 and "0.01<=x<=60" in res.output  # an old millisecond value is refused


def test_export_perfetto_json(tmp_path):
    from tests.helpers.traces import schedule_trace

    res = CliRunner().invoke(main, ["export", "perfetto", str(schedule_trace(tmp_path / "t")),
                                    "-o", str(tmp_path / "o.pftrace"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["sched_switch"] == 12 and out["path"] == str(tmp_path / "o.pftrace")


def test_every_environment_variable_is_documented():
    read = set()
    for d in ("src", "tests", "vm"):
        for f in (REPO / d).rglob("*"):
            if f.suffix in (".py", ".sh") and f.is_file():
                read |= set(re.findall(r"AIOS_LAB_[A-Z][A-Z_]*[A-Z]", f.read_text()))
    known = {name for name, _ in VARIABLES}
    assert read - known == set(), f"read but not in aios_lab.environment: {read - known}"
    assert known - read == set(), f"documented but never read: {known - read}"
    docs = (REPO / "docs" / "environment.md").read_text()
    top = CliRunner().invoke(main, ["--help"]).output
    for name in known:
        assert f"`{name}`" in docs and name in top, name
