"""aios_lab.atomic: files appear whole or not at all."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from aios_lab.atomic import atomic_path, open_atomic, publish_dir, write_json_atomic, write_text_atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_json_lands_whole_in_a_new_folder(tmp_path):
    out = tmp_path / "a" / "b" / "r.json"
    write_json_atomic(out, {"x": [1, 2]})
    assert json.loads(out.read_text()) == {"x": [1, 2]}
    assert out.read_text().endswith("\n")
    assert _leftovers(out.parent) == []


def test_unencodable_json_leaves_the_old_file(tmp_path):
    out = tmp_path / "r.json"
    write_json_atomic(out, {"old": True})
    with pytest.raises(TypeError):
        write_json_atomic(out, {"bad": object()})
    assert json.loads(out.read_text()) == {"old": True}
    assert _leftovers(tmp_path) == []


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "t.txt"
    write_text_atomic(out, "old\n")
    with pytest.raises(RuntimeError):
        with open_atomic(out) as f:
            f.write("half")
            raise RuntimeError("crash")
    assert out.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_the_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.txt").stat().st_mode & 0o777 == 0o644


def test_a_tool_writing_by_name_publishes_on_success_only(tmp_path):
    out = tmp_path / "o.bin"
    write_text_atomic(out, "old")
    old = os.umask(0o022)
    try:
        with atomic_path(out) as tmp:
            assert tmp.parent == tmp_path and tmp != out
            subprocess.run(["sh", "-c", 'printf new > "$1"', "sh", str(tmp)], check=True)
            assert out.read_text() == "old"          # nothing visible until the block ends
    finally:
        os.umask(old)
    assert out.read_text() == "new" and out.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the tool failed")
    assert out.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_replace_dir_swaps_a_finished_folder_in_whole(tmp_path):
    dest, staging = tmp_path / "tree", tmp_path / "tree.partial"
    dest.mkdir()
    (dest / "stale").write_text("x")
    staging.mkdir()
    (staging / "complete.json").write_text("{}")
    publish_dir(staging, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["complete.json"] and not staging.exists()
    staging.mkdir()
    publish_dir(staging, tmp_path / "new")                 # nothing there before: a plain rename
    assert (tmp_path / "new").is_dir() and not staging.exists()
