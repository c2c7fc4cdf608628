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



def mark_verified(reg, entry_hash: str, stages=("static", "verifier", "liveness"), platform=None, actor=None):
    """Record a passing verify run whose report ran `stages`: it stands in for
    `aios-lab policy verify` in tests of what reads the verdict (deploy,
    the root service); the verifier's own tests run the real stages."""
    from aios_lab.control import verification
    from aios_lab.control.audit import Actor

    report = {"policy": "fifo", "passed": True, "failed_stage": None, "reason": "", "tunables": {}, "artifacts": {},
              "target": {"platform": platform or {}},
              "stages": [{"stage": s, "passed": True, "seconds": 0.5, "checks": [], "skipped": ""} for s in stages]}
    return verification.record(reg, reg.by_hash(entry_hash), report, actor or Actor.current())
