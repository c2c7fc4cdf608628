"""The root service: the one privileged door to the host's scheduler.

The agent-facing side (the CLI run by a user, an MCP server, a training
loop) runs unprivileged; it can submit and verify, and it *asks* this
service to deploy. The service, on a Unix socket (its own, or one systemd
passes it: packaging/systemd/), answers one JSON request per connection:

* the caller is who SO_PEERCRED says, and must be root or in the configured
  group (peer.py); what the request says about itself (an agent's name) is
  recorded as a claim, never trusted for the decision;
* `deploy` takes a full registry hash only (a name or a prefix could point
  elsewhere by the time it runs) whose latest verification passed; the
  tunables it may name are checked against the entry's manifest and must be
  the values the entry was verified with (other values are another entry:
  submit and verify that); the duration is bounded;
* requests are rate-limited per uid (a token bucket);
* every deploy and stop request, granted or refused, goes into the audit log
  with the caller's uid and the verdict.

Protocol: the client sends one JSON object and a newline, e.g.
{"op": "deploy", "entry": "<64 hex>", "duration": 30, "agent": "claude"}, and
reads one JSON object back: {"ok": true, ...} or {"ok": false, "error": "..."}.
Ops: ping, status, deploy, stop, rollback ({"op": "rollback", "reason": "..."}:
the running rollout detaches its candidate and attaches the last known good
entry it keeps loaded; audited like deploy and stop).
"""
from __future__ import annotations

import json
import math
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AiosError, PolicyError, RegistryError, ServiceRefused as Refused, SetupError
from . import audit, db
from .audit import Actor
from .deployers import DEPLOYERS, Deployer, Job, materialize
from .entry import HEX_PREFIX_RE
from .peer import Peer, RateLimiter, group_id, member, peer_of
from .registry import Registry
from .rollout import verification_problem

MAX_REQUEST = 64 << 10
OPS = ("ping", "status", "deploy", "stop", "rollback")
_ACTIONS = ("deploy", "stop", "rollback")     # the ops that change what runs: rate-limited and audited
DEFAULT_CONFIG = Path("/etc/aios-lab/service.toml")


@dataclass(frozen=True)
class ServiceConfig:
    socket: Path = Path("/run/aios-lab/control.sock")
    group: str = "aios-lab"
    registry: Path = Path("/var/lib/aios-lab/registry")
    run_dir: Path = Path("/run/aios-lab/entries")
    deployer: str = "sched_ext"
    burst: int = 3                 # deploy/stop requests at once per uid ...
    per_s: float = 60.0            # ... refilled over this many seconds
    max_duration_s: float = 3600.0
    canary_window_s: float = 30.0  # a deployed entry holding this long becomes the last known good

    @classmethod
    def load(cls, path: Path | str) -> "ServiceConfig":
        """[service] from a TOML file; unknown keys are refused (a typo must
        not silently leave a default in place)."""
        from ..safe_read import load_toml

        doc = load_toml(path, error=SetupError, what="service config").get("service", {})
        known = {f: Path if isinstance(getattr(cls(), f), Path) else type(getattr(cls(), f))
                 for f in cls.__dataclass_fields__}
        bad = set(doc) - set(known)
        if bad:
            raise SetupError(f"{path}: [service] has no key {', '.join(sorted(bad))}",
                             hint=f"known: {', '.join(sorted(known))}")
        values = {}
        for k, v in doc.items():
            want = known[k]
            if want is Path and isinstance(v, str):
                v = Path(v)
            elif want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or isinstance(v, bool):
                raise SetupError(f"{path}: [service] {k} = {v!r} is not a {want.__name__}")
            values[k] = v
        cfg = cls(**values)
        if cfg.deployer not in DEPLOYERS:
            raise SetupError(f"{path}: deployer {cfg.deployer!r} is unknown", hint=f"one of {', '.join(DEPLOYERS)}")
        if not (cfg.burst >= 1 and cfg.per_s > 0 and 0 < cfg.max_duration_s <= 7 * 86400
                and 0 < cfg.canary_window_s <= cfg.max_duration_s):
            raise SetupError(f"{path}: burst >= 1, per_s > 0, 0 < max_duration_s <= 604800 and "
                             f"0 < canary_window_s <= max_duration_s, please")
        return cfg


@dataclass
class _Active:
    entry: str
    peer: Peer
    since: float
    until: float
    deployer: Deployer
    detail: dict[str, Any]


class ControlService:
    """The request handling, without the socket (tests drive it directly too)."""

    def __init__(self, config: ServiceConfig, deployer: Deployer | None = None) -> None:
        self.config = config
        self.gid = group_id(config.group)
        self.limiter = RateLimiter(config.burst, config.per_s)
        self.deployer = deployer or DEPLOYERS[config.deployer]()
        self.active: _Active | None = None
        self._lock = threading.Lock()

    def handle(self, peer: Peer, raw: bytes) -> dict[str, Any]:
        try:
            req = _parse(raw)
        except Refused as e:
            return {"ok": False, "error": str(e)}
        op = req["op"]
        if not member(peer, self.gid):
            self._audit(peer, req, op, req.get("entry", ""),
                        f"refused: uid {peer.uid} is not in group {self.config.group}", record=op in _ACTIONS)
            return {"ok": False, "error": f"uid {peer.uid} may not use this service (not root, not in group "
                                          f"{self.config.group})"}
        if op == "ping":
            return {"ok": True, "uid": peer.uid, "deployer": self.deployer.name}
        if op == "status":
            return {"ok": True, "active": self._status()}
        wait = self.limiter.take(peer.uid)
        if wait:
            self._audit(peer, req, op, req.get("entry", ""), "refused: rate limit")
            return {"ok": False, "error": f"rate limit: {self.config.burst} requests per {self.config.per_s:g} s; "
                                          f"try again in {wait:.1f} s"}
        try:
            with self._lock:
                out = {"deploy": self._deploy, "stop": self._stop, "rollback": self._rollback}[op](peer, req)
        except AiosError as e:
            self._audit(peer, req, op, req.get("entry", ""), f"refused: {e.one_line()}")
            return {"ok": False, "error": e.one_line()}
        return {"ok": True, **out}

    # ------------------------------------------------------------------ ops

    def _deploy(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        self._expire()
        entry_hash = req.get("entry")
        if not isinstance(entry_hash, str) or len(entry_hash) != 64 or not HEX_PREFIX_RE.match(entry_hash):
            raise Refused("deploy takes a full registry hash (64 hex digits), not a name or a prefix")
        duration = req.get("duration", self.config.max_duration_s)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
                or not 0 < duration <= self.config.max_duration_s:
            raise Refused(f"duration {duration!r} is not a number of seconds in (0, {self.config.max_duration_s:g}]")
        if self.active is not None:
            raise Refused(f"entry {self.active.entry[:12]} is deployed (by uid {self.active.peer.uid}); stop it first")
        with Registry(self.config.registry) as reg:
            entry = reg.by_hash(entry_hash)
            if entry is None:
                raise Refused(f"no registry entry {entry_hash[:12]}")
            unverified = verification_problem(reg, entry)
            if unverified:
                raise Refused(f"entry {entry_hash[:12]} has {unverified}",
                              hint="verify it first: `aios-lab policy verify`")
            policy = materialize(reg, entry, self.config.run_dir / entry.hash)
            tunables = reg.tunables(entry)
        _check_tunables(policy, tunables, req.get("tunables", {}))
        agent = req.get("agent", "")
        actor = Actor(peer.uid, peer.user, agent if isinstance(agent, str) else "")
        detail = self.deployer.start(Job(self.config.registry, entry, policy, tunables, actor,
                                         self.config.run_dir, self.config.canary_window_s))
        now = time.time()
        self.active = _Active(entry.hash, peer, now, now + float(duration), self.deployer, detail)
        self._audit(peer, req, "deploy", entry.hash, "accepted")
        return {"entry": entry.hash, "until": self.active.until, **detail}

    def _stop(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        if self.active is None:
            raise Refused("nothing is deployed")
        entry, out = self.active.entry, self.active.deployer.stop()
        self.active = None
        self._audit(peer, req, "stop", entry, "accepted")
        return {"entry": entry, **out}

    def _rollback(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        if self.active is None:
            raise Refused("nothing is deployed")
        reason = req.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise Refused("reason must be a string of at most 500 characters")
        out = self.active.deployer.rollback(f"uid {peer.uid}: {reason}" if reason else f"uid {peer.uid}")
        self._audit(peer, req, "rollback", self.active.entry, "accepted")
        return {"entry": self.active.entry, **out}

    def _expire(self) -> None:
        """Detach a deployment whose time is up or that the kernel ended."""
        a = self.active
        if a is None:
            return
        ended = a.deployer.alive()
        if ended is not None or time.time() >= a.until:
            a.deployer.stop()
            self.active = None

    def _status(self) -> dict[str, Any] | None:
        with self._lock:
            self._expire()
            a = self.active
            return None if a is None else {"entry": a.entry, "uid": a.peer.uid, "since": a.since, "until": a.until,
                                           "deployer": a.deployer.name, **a.detail}

    def tick(self) -> None:
        with self._lock:
            self._expire()

    def _audit(self, peer: Peer, req: dict[str, Any], action: str, target: str, verdict: str,
               record: bool = True) -> None:
        if not record:
            return
        agent = req.get("agent", "")
        actor = Actor(peer.uid, peer.user, agent if isinstance(agent, str) else "")
        args = {k: v for k, v in req.items() if k in ("entry", "duration", "tunables", "op", "reason")}
        with Registry(self.config.registry) as reg, db.transaction(reg.conn):
            audit.append(reg.conn, actor, action, target if isinstance(target, str) else "",
                         {**args, "peer_pid": peer.pid, "agent_claimed": bool(agent)}, verdict)


def _parse(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_REQUEST:
        raise Refused(f"request is more than {MAX_REQUEST} bytes")
    try:
        req = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused("request is not a JSON object") from None
    if not isinstance(req, dict) or req.get("op") not in OPS:
        raise Refused(f"request needs \"op\": one of {', '.join(OPS)}")
    if not isinstance(req.get("tunables", {}), dict):
        raise Refused("tunables must be an object of NAME: value")
    return req


def _check_tunables(policy, verified: dict[str, Any], asked: dict[str, Any]) -> None:
    """The caller may restate tunables; they must be the manifest's (in
    range) and the ones the entry was verified with."""
    try:
        parsed = policy.resolve_tunables({k: v for k, v in asked.items()})
    except PolicyError as e:
        raise Refused(e.one_line()) from None
    for k in asked:
        if parsed[k] != verified.get(k):
            raise Refused(f"tunable {k}={parsed[k]} differs from the verified entry's {verified.get(k)}",
                          hint="submit and verify an entry with that value")


# ---------------------------------------------------------------------- socket

class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5.0)
        buf = b""
        try:
            while b"\n" not in buf and len(buf) <= MAX_REQUEST:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            return
        try:
            answer = self.server.service.handle(peer_of(sock), buf.split(b"\n", 1)[0])
        except Exception as e:  # noqa: BLE001 - the caller gets an answer; the service keeps serving
            answer = {"ok": False, "error": f"the service failed: {e}"}
        try:
            sock.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(config: ServiceConfig, stop: threading.Event | None = None, deployer: Deployer | None = None,
          ready: threading.Event | None = None) -> None:
    """Serve until `stop` is set (or forever). Uses the socket systemd passes
    (LISTEN_FDS) when there is one, else binds config.socket (mode 0660,
    group config.group) itself."""
    service = ControlService(config, deployer)
    server = _Server(str(config.socket), _Handler, bind_and_activate=False)
    inherited = _systemd_socket()
    if inherited is not None:
        server.socket.close()
        server.socket = inherited
    else:
        config.socket.parent.mkdir(parents=True, exist_ok=True)
        try:
            config.socket.unlink()
        except FileNotFoundError:
            pass
        umask = os.umask(0o117)
        try:
            server.server_bind()
        finally:
            os.umask(umask)
        if os.geteuid() == 0:
            os.chown(config.socket, 0, service.gid)
        server.server_activate()
    server.service = service
    stop = stop or threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(0.25):  # also how often an expired deployment is detached
            service.tick()
    finally:
        server.shutdown()
        server.server_close()
        with service._lock:
            if service.active is not None:
                service.active.deployer.stop()
                service.active = None


def _systemd_socket() -> socket.socket | None:
    """The listening socket of a systemd .socket unit (sd_listen_fds: fd 3)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=3)
    return None


def request(socket_path: Path | str, payload: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """The client side: one request, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(socket_path))
            s.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as e:
            raise SetupError(f"cannot reach the aios-lab service at {socket_path}: {e.strerror or e}",
                             hint="is aios-lab-control.socket running (systemctl status aios-lab-control.socket)?") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise RegistryError(f"the service at {socket_path} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise RegistryError(f"the service at {socket_path} answered something that is not a JSON object")
    return answer
