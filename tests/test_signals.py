"""aios_lab.signals: the one stop-signal design of deploy, collect and the cpufreq loop."""
from __future__ import annotations

import os
import signal

import pytest

from aios_lab.signals import StopRequested, StopSignals


def test_first_signal_is_a_request_the_second_raises_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals() as stops:
        os.kill(os.getpid(), signal.SIGHUP)
        assert stops.reason == "sighup"
        stops.sleep(30)  # returns at once once a stop was requested
        with pytest.raises(StopRequested) as e:
            stops.check()
        assert e.value.name == "sighup" and isinstance(e.value, KeyboardInterrupt)
        with pytest.raises(StopRequested):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a bytecode boundary for the handler
    assert {s: signal.getsignal(s) for s in before} == before


def test_signals_while_restoring_are_only_noted():
    with StopSignals() as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        stops.hold()
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert stops.pending == [signal.SIGINT] and stops.reason == "sigterm"
