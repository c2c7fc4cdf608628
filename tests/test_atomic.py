"""aios_lab.atomic: files appear whole or not at all."""
from __future__ import annotations

import json
import os

import pytest

from aios_lab.atomic import open_atomic, write_json_atomic, write_text_atomic


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
