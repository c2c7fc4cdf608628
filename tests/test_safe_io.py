"""safe_output and safe_read: the one guarded way to write an output and to
read a file the user names (issue 21, classes 1, 2, 6 and 9's FIFO/device)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading

import click
import pytest

from aios_lab.atomic import open_atomic, write_text_atomic
from aios_lab.cli.types import finite
from aios_lab.errors import InputError, ModelError, OutputError
from aios_lab.safe_output import check_output, scratch_prefix, sweep_stale
from aios_lab.safe_read import load_json, load_toml, parse_json, read_bounded

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")


def _null_device(path):
    """A character device with /dev/null's numbers, made in tmp: the real
    /dev/null is never put at risk by a test."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- outputs ------------------------------------------------------------------------------------

@root_only
def test_a_character_device_is_never_replaced(tmp_path):
    dev = _null_device(tmp_path / "null")
    with pytest.raises(OutputError, match="character device"):
        check_output(dev)
    # The last line of defence, inside every atomic write, holds too.
    with pytest.raises(OutputError, match="character device"):
        write_text_atomic(dev, "x")
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_fifo_a_socket_and_a_folder_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "sock"))
    try:
        for name, kind in (("fifo", "FIFO"), ("dir", "directory"), ("sock", "socket")):
            with pytest.raises(OutputError, match=kind):
                check_output(tmp_path / name)
        with pytest.raises(OutputError, match="FIFO"):
            with open_atomic(tmp_path / "fifo") as f:
                f.write("x")
    finally:
        s.close()
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


def test_a_link_to_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    with pytest.raises(OutputError, match="FIFO"):
        check_output(tmp_path / "link")


def test_an_output_inside_an_input_is_refused(tmp_path):
    trace = tmp_path / "t"
    trace.mkdir()
    (trace / "metadata.json").write_text("{}")
    for out in (trace / "r.html", trace / "metadata.json", trace):
        with pytest.raises(OutputError, match="inside the input"):
            check_output(out, inputs=[trace])
    model = tmp_path / "m.json"
    model.write_text("{}")
    with pytest.raises(OutputError, match="inside the input"):
        check_output(model, inputs=[model])
    assert check_output(tmp_path / "r.html", inputs=[trace]) == tmp_path / "r.html"


def test_existing_files_are_replaced_only_when_asked(tmp_path):
    out = tmp_path / "o"
    out.write_text("keep")
    with pytest.raises(OutputError, match="already exists"):
        check_output(out, replace=False)
    assert check_output(out) == out
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    with pytest.raises(OutputError, match="already exists"):
        check_output(tmp_path / "d", folder=True)
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "no" / "o")
    for empty in ("", "."):
        with pytest.raises(OutputError):
            check_output(empty)


def test_scratch_of_a_killed_writer_is_swept_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "r.json"
    dead, live = _dead_pid(), os.getppid()
    stale = [tmp_path / f".r.json.tmp-{dead}-abc.tmp", tmp_path / f".r.json.partial-{dead}",
             tmp_path / f".r.json.sort-{dead}-xyz"]
    stale[0].write_text("half")
    for d in stale[1:]:
        d.mkdir()
        (d / "run-0.arrow").write_bytes(b"x" * 10)
    kept = [tmp_path / f".r.json.tmp-{live}-abc.tmp", tmp_path / ".other.tmp-1-x", tmp_path / f".r.jsonx.tmp-{dead}"]
    for k in kept:
        k.write_text("")
    assert sorted(sweep_stale(out)) == sorted(stale)
    assert all(k.exists() for k in kept) and not any(s.exists() for s in stale)
    # The writers name their scratch so the sweep recognises it.
    assert scratch_prefix(out, "tmp") == f".r.json.tmp-{os.getpid()}"
    write_text_atomic(out, "x")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json.")) == [kept[0].name]


def test_an_interrupted_atomic_write_leaves_nothing(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        with open_atomic(out) as f:
            f.write("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# -- reads --------------------------------------------------------------------------------------

def test_a_fifo_is_refused_at_once_not_read_forever(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    result = {}

    def read():
        try:
            read_bounded(tmp_path / "fifo", error=ModelError, what="model file")
        except ModelError as e:
            result["e"] = str(e)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "read_bounded blocked on a FIFO"
    assert "is a FIFO" in result["e"]


@root_only
def test_a_device_is_refused(tmp_path):
    zero = tmp_path / "zero"
    os.mknod(zero, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    with pytest.raises(InputError, match="is a character device"):
        read_bounded(zero)


def test_size_bound(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 1001)
    with pytest.raises(InputError, match="1001 bytes, more than the 1000"):
        read_bounded(f, limit=1000)
    assert read_bounded(f, limit=1001) == b"x" * 1001
    with pytest.raises(InputError, match="does not exist"):
        read_bounded(tmp_path / "nope")
    with pytest.raises(InputError, match="directory"):
        read_bounded(tmp_path)


@pytest.mark.parametrize("text, match", [
    ('{"a": ' + "9" * 5000 + "}", "out of range"),
    ("[" * 200_000 + "]" * 200_000, "nests deeper"),
    ("[" * 70 + "]" * 70, "nests deeper"),
    ('{"a": NaN}', "out of range"),
    ("{", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_json_parser_failures_are_typed(text, match):
    with pytest.raises(ModelError, match=match):
        parse_json(text, error=ModelError, what="model file m")


def test_toml_failures_are_typed(tmp_path):
    f = tmp_path / "m.toml"
    for text, match in (("a = ", "not valid TOML"), ("a = " + "[" * 100 + "]" * 100, "nests deeper|cannot be parsed"),
                        ("\xff", "not valid TOML|UTF-8")):
        f.write_text(text, encoding="latin-1")
        with pytest.raises(InputError, match=match):
            load_toml(f)
    f.write_text('name = "x"\n')
    assert load_toml(f) == {"name": "x"}
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"a": [1, {"b": 2}]}))
    assert load_json(g) == {"a": [1, {"b": 2}]}


# -- option types -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "x", ""])
def test_finite_refuses_what_floatrange_lets_through(value):
    with pytest.raises(click.BadParameter):
        finite(0, None).convert(value, None, None)


def test_finite_keeps_ranges():
    assert finite(0, 1, max_open=True).convert("0.5", None, None) == 0.5
    with pytest.raises(click.BadParameter):
        finite(0, 1, max_open=True).convert("1", None, None)
    assert finite(0, None).convert(2.0, None, None) == 2.0


def test_sigterm_during_an_atomic_write_in_the_cli_cleans_up(tmp_path):
    """SIGTERM takes Ctrl-C's path in every command (the CLI's group installs
    the handler), so open_atomic's cleanup runs and the exit status is 130."""
    code = f"""
import sys, time
from aios_lab import cli
from aios_lab.atomic import open_atomic
import click

@cli.main.command("slow-write")
def slow_write():
    with open_atomic({str(tmp_path / 'out')!r}) as f:
        f.write("half")
        print("ready", flush=True)
        time.sleep(60)

cli.main(["slow-write"])
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err.strip() == "Error: interrupted", err
    assert list(tmp_path.iterdir()) == []
