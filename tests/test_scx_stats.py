"""The scx_stats protocol server, over a real Unix socket."""
from __future__ import annotations

import errno
import json
import socket

import pytest

from aios_lab.scx_stats import StatsServer, request, stats_meta


@pytest.fixture
def server(tmp_path):
    counts = {"QUEUED": 0}

    def read():
        counts["QUEUED"] += 1
        return {"QUEUED": counts["QUEUED"], "DIRECT": 7}

    meta = stats_meta("fifo", {"QUEUED": "tasks queued", "DIRECT": ""})
    path = tmp_path / "scx" / "root" / "stats"
    with StatsServer(meta, read, path) as srv:
        yield srv


def test_stats_meta_and_stats(server):
    meta = request(server.path, "stats_meta")
    assert meta["errno"] == 0
    m = meta["args"]["resp"]["fifo_stats"]
    assert m["top"] == "true" and m["name"] == "fifo_stats"
    assert m["fields"] == {"queued": {"datum": "u64", "desc": "tasks queued"}, "direct": {"datum": "u64"}}
    first = request(server.path, "stats", {"target": "top"})
    assert first == {"errno": 0, "args": {"resp": {"queued": 1, "direct": 7}}}
    assert request(server.path, "stats")["args"]["resp"]["queued"] == 2  # read afresh each time


def test_errors_keep_the_connection(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.path))
        f = s.makefile("r")
        for line, want in ((b"not json\n", errno.EINVAL),
                           (b'{"req": "nope", "args": {}}\n', errno.EINVAL),
                           (b'{"req": "stats", "args": {"target": "cpus"}}\n', errno.EINVAL),
                           (b'{"req": "stats", "args": {}}\n', 0)):
            s.sendall(line)
            assert json.loads(f.readline())["errno"] == want, line


def test_a_stale_socket_is_replaced_and_removed_on_close(tmp_path):
    path = tmp_path / "stats"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a SIGKILL
    srv = StatsServer(stats_meta("x", {}), dict, path).start()
    assert request(path, "stats")["args"]["resp"] == {}
    srv.close()
    assert not path.exists()
