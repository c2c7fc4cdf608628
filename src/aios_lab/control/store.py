"""Content-addressed blobs: every file the registry keeps (objects, manifests,
tunables, models, reports) is stored once, under the sha256 of its bytes.

A blob appears at blobs/<2 hex>/<62 hex> only when complete (written through
open_atomic: temp file, fsync, rename), so a crash leaves either no blob or
the whole one, plus at worst a scratch file the next writer sweeps. A blob is
never rewritten: the same bytes have the same name, so a second put is a
no-op. Reads check the hash, so a blob damaged on disk is an error, not a
silently different policy.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterator

from ..atomic import open_atomic
from ..errors import RegistryCorrupt, RegistryError
from ..safe_output import sweep_stale

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# The largest blob we accept: a BPF object or a model is a few MiB at most;
# more is a mistake (a trace folder given as a model), not a policy.
MAX_BLOB = 256 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs under `root`/blobs, named by sha256."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root) / "blobs"

    def path(self, digest: str) -> Path:
        if not HEX64.match(digest):
            raise RegistryError(f"{digest!r} is not a sha256 digest (64 lowercase hex digits)")
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        """Store `data`; returns its sha256. Idempotent and safe against
        concurrent writers of the same bytes (each renames a complete copy)."""
        if len(data) > MAX_BLOB:
            raise RegistryError(f"a blob of {len(data)} bytes is more than the {MAX_BLOB} the registry keeps")
        digest = sha256(data)
        path = self.path(digest)
        if path.is_file():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)  # scratch of a writer killed while writing this blob
        with open_atomic(path, "wb") as f:
            f.write(data)
        return digest

    def get(self, digest: str) -> bytes:
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RegistryCorrupt(f"blob {digest} is missing from {self.root}",
                                  hint="the registry's files were removed by hand; restore them from a backup") from None
        if sha256(data) != digest:
            raise RegistryCorrupt(f"blob {digest} in {self.root} does not match its hash (damaged on disk)",
                                  hint="restore it from a backup")
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def digests(self) -> Iterator[str]:
        """Every complete blob (scratch files are not blobs)."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                name = sub.name + f.name
                if HEX64.match(name):
                    yield name

    def scratch(self) -> list[Path]:
        """Leftovers of interrupted writes (dot files beside the blobs)."""
        if not self.root.is_dir():
            return []
        return sorted(p for sub in self.root.iterdir() if sub.is_dir()
                      for p in sub.iterdir() if p.name.startswith("."))

    def sweep(self) -> list[Path]:
        """Remove the scratch of writers that are gone; returns what went."""
        removed: list[Path] = []
        for p in self.scratch():
            m = re.match(r"^\.([0-9a-f]{62})\.", p.name)
            if m:
                removed += sweep_stale(p.parent / m.group(1))
        return removed


def file_bytes(path: Path | str, what: str) -> bytes:
    """A file to be stored, read with the project's guarded reader."""
    from ..safe_read import read_bounded

    return read_bounded(path, limit=MAX_BLOB, error=RegistryError, what=what)
