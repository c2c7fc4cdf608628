"""How the root service puts a registry entry on the CPU: registered
deployers, chosen by name in the service's configuration.

* `sched_ext`: attach the entry's own object (the stored blob, not a fresh
  build) through aios_lab.sched.deployment, with the entry's tunables, and keep it
  attached until stopped, replaced or ejected.
* `open-only`: libbpf opens the stored object and sets its tunables, and
  nothing is loaded: for a host without sched_ext (where the service can
  still check and audit requests) and for tests. It says so in every answer.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from ..sched.policy import Policy, load_manifest
from .entry import Entry
from .registry import Registry


@dataclasses.dataclass(frozen=True)
class StoredPolicy(Policy):
    """A policy whose object is a registry blob written out, not build/."""
    stored_object: Path = Path()

    @property
    def object_path(self) -> Path:
        return self.stored_object


def materialize(reg: Registry, entry: Entry, folder: Path) -> StoredPolicy:
    """Write an entry's manifest, source and object into `folder` (private to
    root) and read the manifest back as a policy that loads that object."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    manifest = folder / "manifest.toml"
    manifest.write_bytes(reg.blob(entry.manifest))
    pol = load_manifest_lenient(manifest, reg.blob(entry.source) if entry.source else b"")
    obj = folder / f"{entry.hash}.bpf.o"
    obj.write_bytes(reg.blob(entry.object))
    fields = {f.name: getattr(pol, f.name) for f in dataclasses.fields(Policy)}
    return StoredPolicy(**fields, stored_object=obj)


def load_manifest_lenient(manifest: Path, source: bytes) -> Policy:
    """load_manifest wants the source beside the manifest: put it there."""
    from ..safe_read import load_toml

    name = load_toml(manifest, error=RegistryError, what="stored manifest").get("source")
    if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        raise RegistryError(f"stored manifest {manifest} names no plain source file")
    (manifest.parent / name).write_bytes(source)
    return load_manifest(manifest)


class Deployer:
    name = ""

    def start(self, policy: StoredPolicy, tunables: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def alive(self) -> dict[str, Any] | None:
        """None while the policy runs; else what ended it."""
        raise NotImplementedError

    def stop(self) -> dict[str, Any]:
        raise NotImplementedError


class SchedExtDeployer(Deployer):
    name = "sched_ext"

    def __init__(self) -> None:
        self._dep = None

    def start(self, policy, tunables):
        from ..sched.deployment import Deployment

        self._dep = Deployment(policy, tunables).start()
        return {"loaded": True, "load_s": self._dep.load_s, "attach_s": self._dep.attach_s}

    def alive(self):
        from ..errors import SchedulerEjected

        try:
            self._dep.check()
        except SchedulerEjected as e:
            return {"ejected": str(e)}
        return None

    def stop(self):
        info = self._dep.stop()
        return {"exit": info.one_line() if info else None}


class OpenOnlyDeployer(Deployer):
    name = "open-only"

    def start(self, policy, tunables):
        from ..bpf import BpfObject

        obj = BpfObject.open(policy.object_path)
        try:
            obj.set_rodata_many(tunables)
        finally:
            obj.close()
        return {"loaded": False, "note": "open-only deployer: object opened and tunables set; nothing loaded"}

    def alive(self):
        return None

    def stop(self):
        return {"loaded": False}


DEPLOYERS: dict[str, type[Deployer]] = {d.name: d for d in (SchedExtDeployer, OpenOnlyDeployer)}
