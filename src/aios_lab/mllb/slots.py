"""Push a decision tree into a running policy's model slots, atomically.

The policy reads `model[ctl.active]` on every decision; the inactive slot is
written and read back, then `ctl.active` flips (one aligned u32 store), with
a grace period before a retired slot is reused (aios_lab.bpf.double_buffer).

Layouts come from the object's BTF (policies/mllb/intf.h), never from
Python declarations.
"""
from __future__ import annotations

import ctypes
from typing import Any

from ..bpf import BpfObject, Map
from ..bpf.double_buffer import GRACE_S, SlotWriter  # noqa: F401 (GRACE_S: part of this module's API)
from ..errors import LayoutError, ModelError
from ..sched.policy import ModelSpec
from .limits import TreeLimits
from .model import QuantizedTree

MODES = {"collect": 0, "model": 1}


class ModelSlots:
    """The two model slots and the control word of one loaded policy object."""

    def __init__(self, obj: BpfObject, spec: ModelSpec) -> None:
        btf = obj.btf
        self._model_t = btf.ctypes_type("mllb_model")
        self._ctl_t = btf.ctypes_type("mllb_ctl")
        self.slots: Map = obj.map(spec.slots_map)
        self.ctl: Map = obj.map(spec.ctl_map)
        if self.slots.value_size != ctypes.sizeof(self._model_t) or self.slots.max_entries != 2:
            raise LayoutError(f"map {spec.slots_map} is not two struct mllb_model slots")
        self.limits = TreeLimits.from_btf(btf, spec.features_enum, spec.feature_prefix)
        if len(self._model_t().nodes) != self.limits.max_nodes:
            raise LayoutError("struct mllb_model and enum mllb_limit disagree; rebuild the policy")
        self._writer = SlotWriter(self.slots)

    # -- reading ---------------------------------------------------------------------

    def read_ctl(self) -> dict[str, int]:
        raw = self.ctl.lookup_u32_key(0)
        c = self._ctl_t.from_buffer_copy(raw)
        return {"active": c.active, "mode": c.mode, "version": c.version, "swaps": c.swaps}

    def read_slot(self, slot: int) -> Any:
        return self._model_t.from_buffer_copy(self.slots.lookup_u32_key(slot))

    def active_model(self) -> dict[str, Any] | None:
        ctl = self.read_ctl()
        m = self.read_slot(ctl["active"] & 1)
        if m.magic != self.limits.magic:
            return None
        return {"version": m.version, "checksum": m.checksum, "nr_nodes": m.nr_nodes, "max_depth": m.max_depth}

    # -- writing ---------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ModelError(f"unknown mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        ctl = self.read_ctl()
        self._write_ctl(ctl["active"], MODES[mode], ctl["version"], ctl["swaps"])

    def push(self, tree: QuantizedTree, version: int, checksum64: int) -> int:
        """Write `tree` into the inactive slot and make it active; returns that slot.

        The tree must already be validated against self.limits (the model
        module does that); this checks again what would corrupt the kernel's
        view, and leaves the live model untouched when anything is wrong."""
        n = len(tree.feature)
        if not 1 <= n <= self.limits.max_nodes:
            raise ModelError(f"model has {n} nodes, the slot holds 1..{self.limits.max_nodes}")
        if tree.max_depth > self.limits.max_depth:
            raise ModelError(f"model depth {tree.max_depth} exceeds the policy's bound {self.limits.max_depth}")
        m = self._model_t()
        m.magic = self.limits.magic
        m.nr_features = self.limits.nr_features
        m.nr_nodes = n
        m.max_depth = int(tree.max_depth)
        m.version = int(version) & (2**64 - 1)
        m.checksum = int(checksum64) & (2**64 - 1)
        for i in range(n):
            node = m.nodes[i]
            node.threshold = int(tree.threshold[i])
            node.feature = int(tree.feature[i])
            node.left = int(tree.left[i])
            node.right = int(tree.right[i])
            node.leaf = int(tree.leaf[i])
        ctl = self.read_ctl()
        target = self._writer.write_inactive(ctl["active"], bytes(m), "model")
        self._write_ctl(target, ctl["mode"], m.version, ctl["swaps"] + 1)
        self._writer.flipped()
        return target

    def _write_ctl(self, active: int, mode: int, version: int, swaps: int) -> None:
        c = self._ctl_t()
        c.active, c.mode, c.version, c.swaps = active, mode, version, swaps
        self.ctl.update((0).to_bytes(4, "little"), bytes(c))
