"""The CLI: every command has help with an example; errors are one line."""
import click
from click.testing import CliRunner

from aios_lab.cli import main


def _walk(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, prefix + (name,))


def test_every_command_has_help_with_an_example():
    missing = []
    for path, cmd in _walk(main):
        res = CliRunner().invoke(main, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        if not cmd.help or "Example:" not in cmd.help:
            missing.append(" ".join(path))
    assert not missing, f"commands without help/example: {missing}"


def test_policy_list_shows_fifo_and_hides_test_policies():
    res = CliRunner().invoke(main, ["policy", "list"])
    assert res.exit_code == 0 and "fifo" in res.output and "stall" not in res.output


def test_library_errors_become_one_line():
    res = CliRunner().invoke(main, ["deploy", "no-such-policy"])
    assert res.exit_code == 3
    assert res.output.strip().count("\n") == 0 and res.output.startswith("Error: no policy named")


def test_status_without_sched_ext_says_so(monkeypatch, tmp_path):
    from aios_lab.sched import sched_ext
    monkeypatch.setattr(sched_ext, "SYSFS", tmp_path / "none")
    res = CliRunner().invoke(main, ["status"])
    assert res.exit_code == 4 and "has no sched_ext" in res.output and "aios-lab vm run" in res.output


def test_deploy_without_root_is_refused_before_anything_loads(monkeypatch):
    import os
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(main, ["deploy", "fifo", "--duration", "1"])
    assert res.exit_code == 4
    assert res.output.startswith("Error: attaching a sched_ext scheduler needs root")
    assert res.output.strip().count("\n") == 0


def test_vm_run_rejects_an_impossible_topology_in_one_line():
    res = CliRunner().invoke(main, ["vm", "run", "--cpus", "3", "--numa", "2", "--", "true"])
    assert res.exit_code == 1 and "cannot be split evenly" in res.output
