"""Who is on the other end of a Unix socket, whether they may ask, and how
often: the root service's gate (service.py).

The kernel fills SO_PEERCRED when the client connects: its pid, uid and gid
as the kernel knows them, which a client cannot forge (unlike anything it
writes into the request). A caller is allowed when it is root or a member of
the configured group: its primary gid is the group's, or the group lists it
(supplementary groups come from the group database, as for a login: the
kernel passes only the primary gid).
"""
from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import SetupError

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid{self.uid}"


def peer_of(sock: socket.socket) -> Peer:
    return Peer(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SetupError(f"group {name!r} does not exist",
                         hint=f"create it (groupadd --system {name}) and add the users who may deploy") from None


def member(peer: Peer, gid: int) -> bool:
    """Root, or in group `gid` (primary or supplementary)."""
    if peer.uid == 0 or peer.gid == gid:
        return True
    try:
        user = pwd.getpwuid(peer.uid)
    except KeyError:
        return False  # a uid with no account has no supplementary groups
    return gid in os.getgrouplist(user.pw_name, user.pw_gid)


class RateLimiter:
    """A token bucket per uid: `burst` requests at once, then one every
    `per_s / burst` seconds. A refused request costs nothing; every request
    that reaches the check, granted or refused later, costs a token, so
    hammering the service with bad requests is limited too."""

    def __init__(self, burst: int, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or per_s <= 0:
            raise SetupError(f"rate limit {burst} per {per_s} s is not positive")
        self.burst, self.rate, self.clock = burst, burst / per_s, clock
        self._tokens: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, uid: int) -> float:
        """0.0 when granted, else the seconds until a token is free."""
        with self._lock:
            now = self.clock()
            tokens, at = self._tokens.get(uid, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._tokens[uid] = (tokens - 1, now)
                return 0.0
            self._tokens[uid] = (tokens, now)
            return (1 - tokens) / self.rate
