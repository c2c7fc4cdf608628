"""SIGINT, SIGTERM and SIGHUP as an orderly stop: one design for every loop
that holds the machine in a changed state (deploy, collect, the cpufreq
governor loop).

The first signal only records the request; the loop looks at it where it can
stop cleanly (`check()` raises StopRequested, a KeyboardInterrupt, so Ctrl-C
and SIGTERM take the same path). An exception raised straight from a handler
lands wherever the main thread happens to be, and Python swallows it
("Exception ignored in ...") when that is a finalizer: the likely way a
SIGTERM was once lost on CI (a collect went on to the workload's end). A
second signal raises at once, so a loop stuck in a workload that ignores
SIGTERM can still be interrupted; after `hold()` (the loop is restoring what
it changed) signals are only noted, so a second Ctrl-C cannot cut a restore
in half. The previous handlers are given back on exit. Only the main thread may
set handlers; elsewhere the caller's own handling applies.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """A stop asked for by a signal; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        """"sigint", "sigterm" or "sighup" (as summaries report it)."""
        return signal.Signals(self.signum).name.lower()


class StopSignals:
    """Context manager (or install()/restore()) for the signals that stop a loop."""

    def __init__(self) -> None:
        self.requested: int | None = None     # the first signal's number
        self.pending: list[int] = []          # signals that arrived while shielded
        self._shielded = False
        self._old: dict[int, Any] = {}
        self._wake = threading.Event()

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in SIGNALS}
        return self

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _handler(self, signum: int, frame: Any) -> None:
        if self._shielded:
            self.pending.append(signum)
            return
        again = self.requested is not None
        if not again:
            self.requested = signum
        self._wake.set()
        if again:
            raise StopRequested(signum)

    @property
    def reason(self) -> str | None:
        """"sigint", "sigterm" or "sighup" once a stop was requested."""
        return signal.Signals(self.requested).name.lower() if self.requested is not None else None

    def check(self) -> None:
        """Raise StopRequested if a signal asked for a stop."""
        if self.requested is not None:
            raise StopRequested(self.requested)

    def sleep(self, seconds: float) -> None:
        """time.sleep that returns early when a stop is requested."""
        if self.requested is None and seconds > 0:
            self._wake.wait(seconds)

    def hold(self) -> None:
        """From now on (until restore) signals are only noted, in `pending`."""
        self._shielded = True
