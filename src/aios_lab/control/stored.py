"""A registry entry written out as a policy that loads its stored object
(the blob, never a rebuild): what the root service and a rollout attach."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import RegistryError
from ..sched.policy import Policy, get, load_manifest
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
    return _stored(pol, obj)


def load(folder: Path, entry_hash: str) -> StoredPolicy:
    """An entry that `materialize` wrote into `folder` before (by another
    process: the verifier's guest runs the deployed arm from it)."""
    obj = folder / f"{entry_hash}.bpf.o"
    if not obj.is_file():
        raise RegistryError(f"{folder} holds no written-out entry {entry_hash[:12]}")
    return _stored(load_manifest(folder / "manifest.toml"), obj)


def deployed_policy(deployed: dict) -> Policy:
    """The policy of a verifier's deployed arm (verify.Case.deployed): the
    written-out entry when it names one, else the installed policy of its name."""
    if deployed.get("entry"):
        return load(Path(deployed["folder"]), deployed["entry"])
    return get(deployed["policy"])


def _stored(pol: Policy, obj: Path) -> StoredPolicy:
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
