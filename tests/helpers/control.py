"""Shared by the tests of aios_lab.control: real policy parts (the fifo object
that `make build` compiled, its manifest and source) with tunables varied to
make distinct entries."""
from __future__ import annotations

from aios_lab import build
from aios_lab.control.entry import Parts
from aios_lab.sched.policy import get

FIFO = get("fifo")


def fifo_parts(slice_ns: int = 20_000_000, strict: bool = False, model: bytes | None = None) -> Parts:
    """Parts of the real fifo policy (its object compiled if it is stale)."""
    build.compile_bpf(FIFO.source_path, FIFO.object_path)
    return Parts("fifo", "sched_ext", FIFO.object_path.read_bytes(), (FIFO.folder / "manifest.toml").read_bytes(),
                 {"slice_ns": slice_ns, "strict_fifo": strict}, model, FIFO.source_path.read_bytes())

