"""Publish a value to BPF through two slots of an array map.

A learning policy reads `slots[ctl.active]` on every decision. A map update
from user space is a plain copy into the value, which a concurrent BPF
program could see half-done, so the slot the kernel reads is never written:
the other one is written and read back, and only then does the caller flip
its control word. The slot just retired may still be read by a program that
looked up `active` before the flip, so it is not rewritten until GRACE_S
has passed (BPF programs run for microseconds, under RCU; GRACE_S is three
orders of magnitude longer). Used by mllb's model slots and freq's table
slots; each owns its control word's layout.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

from ..errors import ModelError

GRACE_S = 0.02


class _SlotMap(Protocol):
    def lookup_u32_key(self, i: int) -> Any: ...
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...


class SlotWriter:
    """Writes the inactive one of two slots; remembers when the last flip was."""

    def __init__(self, slots: _SlotMap) -> None:
        self.slots = slots
        self.last_flip = 0.0

    def write_inactive(self, active: int, raw: bytes, what: str) -> int:
        """Write `raw` into the slot that is not `active` and read it back;
        return that slot. Waits out the grace period of the last flip first.
        Raises ModelError (`what` names the value) when the read-back differs."""
        wait = self.last_flip + GRACE_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the inactive slot may still be read by a pre-flip lookup
        target = 1 - (active & 1)
        self.slots.update(target.to_bytes(4, "little"), raw)
        if bytes(self.slots.lookup_u32_key(target)) != raw:
            raise ModelError(f"{what} slot {target} reads back different bytes; the live {what} is unchanged")
        return target

    def flipped(self) -> None:
        """The caller has made the written slot active."""
        self.last_flip = time.monotonic()
