"""Consume a BPF_MAP_TYPE_RINGBUF map with libbpf's ring_buffer__* API.

The Python callback runs inside ring_buffer__poll/consume. ctypes would only
print (and otherwise ignore) an exception escaping a callback, so we catch it,
stop consumption by returning an error to libbpf, and re-raise it from poll().
"""
from __future__ import annotations

import ctypes
from typing import Callable

from aios_lab.bpf import libbpf
from aios_lab.bpf.handle import Closeable
from aios_lab.bpf.maps import MAP_TYPE_RINGBUF, Map
from aios_lab.errors import BpfMapError

_EINTR = 4
_EAGAIN = 11


class RingBuffer(Closeable):
    """Deliver each ring buffer record to `callback(data: bytes)`."""

    def __init__(self, map: Map, callback: Callable[[bytes], object]) -> None:
        if map.type != MAP_TYPE_RINGBUF:
            raise BpfMapError(f"map {map.name} is type {map.type}, not a ring buffer")
        self.map = map
        self._callback = callback
        self._error: BaseException | None = None
        self.records = 0
        self._budget: int | None = None  # records left in this consume() call
        # Keep the trampoline referenced for as long as libbpf may call it.
        self._c_callback = libbpf.RING_BUFFER_SAMPLE_FN(self._on_sample)
        self._ptr: int | None = libbpf.call_ptr(
            BpfMapError, f"cannot create ring buffer over map {map.name}", "ring_buffer__new",
            map.fd, self._c_callback, None, None)

    def _on_sample(self, _ctx: int, data: int, size: int) -> int:
        if self._error is not None:
            return -1
        try:
            payload = ctypes.string_at(data, size)
            self.records += 1
            self._callback(payload)
        except BaseException as exc:  # noqa: BLE001 - re-raised from poll()
            self._error = exc
            return -1  # a negative return makes libbpf stop and return it
        if self._budget is not None:
            self._budget -= 1
            if self._budget <= 0:
                # libbpf has consumed this record; a negative return stops it here.
                return -_EAGAIN
        return 0

    def _finish(self, ret: int, what: str, before: int) -> int:
        err, self._error = self._error, None
        budget_hit = self._budget is not None and self._budget <= 0
        self._budget = None
        if err is not None:
            raise err
        if ret == -_EAGAIN and budget_hit:
            return self.records - before
        if ret < 0:
            if -ret == _EINTR:  # a signal interrupted epoll_wait: nothing consumed
                return 0
            raise BpfMapError(f"ring buffer {what} on map {self.map.name} failed", -ret)
        return ret

    def poll(self, timeout_ms: int = 100, max_records: int | None = None) -> int:
        """Wait up to timeout_ms for records and consume them (at most max_records); returns how many."""
        before, self._budget = self.records, max_records
        ret = libbpf.func("ring_buffer__poll")(self._live(), int(timeout_ms))
        return self._finish(ret, "poll", before)

    def consume(self, max_records: int | None = None) -> int:
        """Consume what is available now (at most max_records), without waiting; returns how many."""
        before, self._budget = self.records, max_records
        ret = libbpf.func("ring_buffer__consume")(self._live())
        return self._finish(ret, "consume", before)

    @property
    def epoll_fd(self) -> int:
        """For integrating with an external event loop (selectors)."""
        return int(libbpf.func("ring_buffer__epoll_fd")(self._live()))

    def _live(self) -> int:
        if not self._ptr:
            raise BpfMapError(f"ring buffer over map {self.map.name} is closed")
        return self._ptr

    def close(self) -> None:
        """Free libbpf's ring buffer; idempotent."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            libbpf.func("ring_buffer__free")(ptr)

