"""The shape of the CLI package: one error boundary (the class of every group),
command modules that import no other command module, and a library that
never prints (only the CLI and `python -m` entry points do)."""
from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aios_lab.cli import main
from aios_lab.cli.group import AiosGroup
from aios_lab.errors import AiosError, ModelError, SchedulerEjected

from tests.helpers import REPO

SRC = REPO / "src" / "aios_lab"
CLI = SRC / "cli"
SHARED = {"group", "options", "types"}  # what a command module may import from the package


def _cli_imports(path: Path) -> set[str]:
    """The aios_lab.cli modules a file imports (relative or absolute)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif node.level == 0 and (node.module or "").startswith("aios_lab.cli"):
                rest = node.module[len("aios_lab.cli"):].lstrip(".")
                found |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("aios_lab.cli.")}
    return found


@pytest.mark.parametrize("module", sorted(p.stem for p in CLI.glob("*.py") if p.stem not in ("__init__", "__main__")))
def test_no_command_module_imports_another(module):
    others = _cli_imports(CLI / f"{module}.py") - SHARED
    assert not others, f"cli/{module}.py imports CLI module(s) {sorted(others)}; only the package root registers them"


def test_every_group_is_the_boundary():
    def groups(g):
        yield g
        for c in g.commands.values():
            if isinstance(c, click.Group):
                yield from groups(c)
    assert all(isinstance(g, AiosGroup) for g in groups(main))


def _tree(exc: BaseException):
    root, sub = AiosGroup("root"), AiosGroup("sub")

    @sub.command("fail")
    def fail():
        click.echo("before")
        raise exc
    root.add_command(sub)
    return root, sub


@pytest.mark.parametrize(("exc", "code", "line"), [
    (ModelError("bad tree", hint="retrain it"), 3, "Error: bad tree (retrain it)"),
    (SchedulerEjected("watchdog stall"), 5, "Error: watchdog stall"),
    (AiosError("something else"), 1, "Error: something else"),
    (KeyboardInterrupt(), 130, "Error: interrupted"),
])
def test_a_library_error_is_one_line_and_its_exit_code_at_any_depth(exc, code, line):
    root, sub = _tree(exc)
    # Through the root, and a group run on its own: the same line, once.
    for group, args in ((root, ["sub", "fail"]), (sub, ["fail"])):
        res = CliRunner().invoke(group, args)
        assert res.exit_code == code and res.output == f"before\n{line}\n", (args, res.output)


def test_a_bug_is_not_turned_into_a_message():
    res = CliRunner().invoke(_tree(RuntimeError("a bug"))[0], ["sub", "fail"])
    assert isinstance(res.exception, RuntimeError) and "Error:" not in res.output


def _prints(tree: ast.Module):
    """(line, what) for each use of print, click.echo, sys.stdout or
    sys.stderr outside a top-level `main` (a `python -m` entry point)."""
    allowed = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"
               for n in ast.walk(f)}
    for n in ast.walk(tree):
        if id(n) in allowed:
            continue
        if isinstance(n, ast.Name) and n.id == "print":
            yield n.lineno, "print"
        elif (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
              and (n.value.id, n.attr) in (("click", "echo"), ("sys", "stdout"), ("sys", "stderr"))):
            yield n.lineno, f"{n.value.id}.{n.attr}"


def test_the_library_never_prints():
    found = [f"{p.relative_to(SRC)}:{line}: {what}" for p in sorted(SRC.rglob("*.py"))
             if CLI not in p.parents for line, what in _prints(ast.parse(p.read_text()))]
    assert not found, "the library writes to the terminal (return it, or take a callback):\n" + "\n".join(found)
