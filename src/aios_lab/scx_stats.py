"""A policy's statistics over the scx_stats protocol, so that the tools of
the scx ecosystem that read any scheduler's stats (scx's generic stats
client and its OpenMetrics exporter) read ours too.

The protocol, as scx's rust/scx_stats speaks it (this is our own
implementation of it): a Unix stream socket, one JSON object per line in
each direction.

- request ``{"req": "stats_meta", "args": {}}`` -> the description of the
  statistics: ``{STRUCT: {"name": STRUCT, "top": "true", "desc": ...,
  "fields": {FIELD: {"datum": "u64", "desc": ...}}}}``;
- request ``{"req": "stats", "args": {"target": "top"}}`` (``target``
  defaults to "top") -> ``{FIELD: value, ...}``;
- every answer is ``{"errno": 0, "args": {"resp": ANSWER}}``; an unknown
  request or target, or a line that is not JSON, gets ``errno`` EINVAL and
  the error text as ``resp``, and the connection stays open.

The socket is where scx schedulers put theirs, ``/var/run/scx/root/stats``
(there is one root scheduler at a time, so one socket), unless given.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any, Callable

DEFAULT_PATH = Path("/var/run/scx/root/stats")


def check_socket_path(path: Path | str) -> Path:
    """Refuse a socket path where something that is not a socket lives (a FIFO,
    a device, a file, a folder): the server replaces only a stale socket."""
    from .errors import OutputError

    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as e:
        raise OutputError(f"--stats-socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise OutputError(f"--stats-socket {path} exists and is not a socket",
                          hint="remove it, pass another --stats-socket, or --no-stats-socket")
    return path


def stats_meta(policy: str, fields: dict[str, str]) -> dict[str, Any]:
    """The stats_meta answer for a policy whose counters are ``fields``
    (counter name -> description); field names are lower-case, as scx's."""
    name = f"{policy}_stats"
    return {name: {
        "name": name, "top": "true",
        "desc": f"aios-lab policy {policy}: its per-CPU counters, summed over CPUs",
        "fields": {k.lower(): ({"datum": "u64", "desc": d} if d else {"datum": "u64"})
                   for k, d in fields.items()}}}


class StatsServer:
    """Serves ``read()`` (counter name -> value) on a Unix socket until closed.

    One thread accepts, one thread per client answers; ``read`` is called
    from those threads.
    """

    def __init__(self, meta: dict[str, Any], read: Callable[[], dict[str, int]],
                 path: Path | str = DEFAULT_PATH) -> None:
        self.meta = meta
        self.read = read
        self.path = Path(path)
        self._sock: socket.socket | None = None
        self._closed = threading.Event()

    def start(self) -> "StatsServer":
        """Bind and listen; a stale socket file (left by a killed scheduler:
        only one root scheduler can be attached) is replaced. Raises OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        threading.Thread(target=self._accept, name="scx-stats", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "StatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def answer(self, line: str) -> dict[str, Any]:
        """The response to one request line."""
        try:
            req = json.loads(line)
            kind = req["req"]
            args = req.get("args") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return _error(f"bad request {line.strip()[:200]!r}: {e}")
        if kind == "stats_meta":
            return _ok(self.meta)
        if kind == "stats":
            target = args.get("target", "top")
            if target != "top":
                return _error(f"unknown stat target {target!r} (this server has only 'top')")
            try:
                return _ok({k.lower(): v for k, v in self.read().items()})
            except Exception as e:  # a reader failing must not end the server
                return _error(f"reading the statistics failed: {e}", errno.EIO)
        return _error(f"unknown command {kind!r} (stats, stats_meta)")

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()  # type: ignore[union-attr]
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("r", encoding="utf-8") as lines:
            try:
                for line in lines:
                    if self._closed.is_set():
                        return
                    if line.strip():
                        conn.sendall((json.dumps(self.answer(line)) + "\n").encode())
            except OSError:
                return  # the client went away


def _ok(resp: Any) -> dict[str, Any]:
    return {"errno": 0, "args": {"resp": resp}}


def _error(text: str, code: int = errno.EINVAL) -> dict[str, Any]:
    return {"errno": code, "args": {"resp": text}}


def request(path: Path | str, req: str, args: dict[str, str] | None = None,
            timeout_s: float = 5.0) -> dict[str, Any]:
    """One request as a client (scx's tools do the same); returns the whole response."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall((json.dumps({"req": req, "args": args or {}}) + "\n").encode())
        with s.makefile("r", encoding="utf-8") as f:
            return json.loads(f.readline())
