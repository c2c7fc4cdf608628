"""Every command of the CLI is documented: named as `aios-lab <command>` in
the README or a page under docs/, with help text and an example in its
--help, and help for each of its visible options. Walks the click tree, so a
new command or option fails here until it is documented."""
from __future__ import annotations

import re

import click
import pytest

from aios_lab.cli import main

from tests.helpers import REPO



def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        if cmd.hidden:
            continue
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, prefix + (name,))


COMMANDS = list(_walk(main))
IDS = [" ".join(path) for path, _ in COMMANDS]


@pytest.fixture(scope="module")
def docs_text() -> str:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(p.read_text() for p in pages)


def test_the_walk_finds_nested_commands():
    # A walk that stopped at the top level would pass everything below it.
    assert {"vm run", "export perfetto", "sweep plan", "freq restore", "train lb"} <= set(IDS)


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_every_command_is_in_the_readme_or_docs(docs_text, path, cmd):
    words = r"\s+".join(re.escape(w) for w in path)
    assert re.search(rf"aios-lab\s+{words}(?![\w-])", docs_text), (
        f"`aios-lab {' '.join(path)}` appears in neither README.md nor docs/*.md")


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_every_command_has_help_with_an_example(path, cmd):
    assert cmd.help and cmd.help.strip(), f"aios-lab {' '.join(path)} has no help text"
    assert "Example: aios-lab " in cmd.help or "Example: sudo aios-lab " in cmd.help, (
        f"aios-lab {' '.join(path)}: its help has no `Example: aios-lab ...` line")


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_every_visible_option_has_help(path, cmd):
    bare = [p.opts[0] for p in cmd.params
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not bare, f"aios-lab {' '.join(path)}: options without help: {bare}"
