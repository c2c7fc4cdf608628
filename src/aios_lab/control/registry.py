"""The content-addressed policy registry: entries (see entry.py) indexed in
SQLite, their files in the blob store, every change audited.

A submit writes the blobs first (each complete or absent, see store.py),
then, in one transaction, the entry row and its audit record. A process
killed anywhere in between leaves either the whole entry with its record or
neither: at worst blobs nothing refers to, which `check` lists and which
harm nothing (the next submit of the same bytes reuses them).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import paths
from ..errors import AiosError, RegistryError
from . import audit, db
from .audit import Actor
from .entry import (RUN_KINDS, VERDICTS, Author, Entry, Parts, Run, Sample, parse_ref, parts_from_folder,
                    tunables_bytes)
from .platform import Platform
from .store import BlobStore

INDEX = "registry.sqlite"


def default_root() -> Path:
    """AIOS_LAB_REGISTRY, else the registry folder in aios-lab's data dir."""
    env = os.environ.get("AIOS_LAB_REGISTRY")
    return Path(env).resolve() if env else paths.data_dir() / "registry"


@dataclass(frozen=True)
class SubmitResult:
    entry: Entry
    created: bool          # False: this content was already there
    audit_seq: int


def author_of(actor: Actor) -> Author:
    return Author("agent", actor.agent, actor.uid) if actor.agent else Author("person", actor.user, actor.uid)


class Registry:
    """One registry folder: blobs/ and registry.sqlite. Safe to open from
    many processes at once."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry {self.root} is not a folder", hint="point AIOS_LAB_REGISTRY at a folder")
        self.blobs = BlobStore(self.root)
        self.conn = db.connect(self.root / INDEX)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ submit

    def submit(self, parts: Parts, actor: Actor, parent: str | None = None, root: bool = False) -> SubmitResult:
        """Store `parts` as an entry (or find it: same content, same key).
        `parent` is a reference; by default the newest entry of the same
        name is the parent, and `root=True` records none."""
        key = parts.key()
        digests = {"object": self.blobs.put(parts.object), "manifest": self.blobs.put(parts.manifest),
                   "tunables": self.blobs.put(tunables_bytes(parts.tunables)),
                   "model": self.blobs.put(parts.model) if parts.model is not None else None,
                   "source": self.blobs.put(parts.source) if parts.source is not None else None}
        with db.transaction(self.conn):
            existing = self._row(key)
            if existing is not None:
                rec = audit.append(self.conn, actor, "submit", key, {"name": parts.name}, "exists")
                return SubmitResult(Entry.from_row(existing), False, rec.seq)
            if root:
                parent_hash = None
            elif parent is not None:
                parent_hash = self.resolve(parent)
            else:
                row = self.conn.execute("SELECT hash FROM entries WHERE name = ? ORDER BY created_ns DESC, rowid DESC "
                                        "LIMIT 1", (parts.name,)).fetchone()
                parent_hash = row["hash"] if row else None
            author = author_of(actor)
            self.conn.execute(
                "INSERT INTO entries(hash, name, kind, parent, object, manifest, tunables, model, source, object_size,"
                " author_kind, author_name, author_uid, created_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, parts.name, parts.kind, parent_hash, digests["object"], digests["manifest"],
                 digests["tunables"], digests["model"], digests["source"], len(parts.object), author.kind,
                 author.name, author.uid, time.time_ns()))
            rec = audit.append(self.conn, actor, "submit", key,
                               {"name": parts.name, "parent": parent_hash, "tunables": parts.tunables,
                                "model": digests["model"]}, "accepted")
            return SubmitResult(Entry.from_row(self._row(key)), True, rec.seq)

    def submit_folder(self, folder: Path | str, actor: Actor, sets: dict[str, str] | None = None,
                      model: Path | str | None = None, build: bool = True, parent: str | None = None,
                      root: bool = False) -> SubmitResult:
        """Build (or read) a policy folder's object and submit it. A submit
        that is refused (bad manifest, tunable out of range, build failure)
        is audited too, with the reason, then raised."""
        args = {"folder": str(Path(folder).resolve()), "sets": dict(sets or {}),
                "model": str(model) if model is not None else None, "parent": parent}
        try:
            parts = parts_from_folder(folder, sets, model, build)
            return self.submit(parts, actor, parent, root)
        except AiosError as e:
            self.refused(actor, "submit", args, e)
            raise

    def refused(self, actor: Actor, action: str, args: dict[str, Any], error: AiosError, target: str = "") -> None:
        """Audit a request that was refused before it changed anything."""
        with db.transaction(self.conn):
            audit.append(self.conn, actor, action, target, args, f"refused: {error.one_line()}")

    # ------------------------------------------------------------------ look up

    def _row(self, key: str):
        return self.conn.execute("SELECT * FROM entries WHERE hash = ?", (key,)).fetchone()

    def resolve(self, ref: str) -> str:
        """The full hash a reference names (see entry.Ref)."""
        r = parse_ref(ref)
        by_hash = []
        if r.may_be_hash:
            by_hash = [row["hash"] for row in self.conn.execute(
                "SELECT hash FROM entries WHERE hash >= ? AND hash < ? ORDER BY hash LIMIT 3",
                (r.base, r.base + "g"))]
        by_name = self.conn.execute("SELECT hash FROM entries WHERE name = ? ORDER BY created_ns DESC, rowid DESC "
                                    "LIMIT 1", (r.base,)).fetchone()
        if len(by_hash) > 1:
            raise RegistryError(f"{r.base} is the start of several entries' hashes", hint="give more hex digits")
        if by_hash and by_name:
            raise RegistryError(f"{r.base} is both a policy name and the start of a hash",
                                hint="give more hex digits of the hash")
        if not by_hash and not by_name:
            raise RegistryError(f"no registry entry matches {r.base!r}",
                                hint="see `aios-lab policy list --registry`")
        key = by_hash[0] if by_hash else by_name["hash"]
        for i in range(r.back):
            parent = self._row(key)["parent"]
            if parent is None:
                raise RegistryError(f"{ref}: {key[:12]} has no parent ({i} ancestors back is the root)")
            key = parent
        return key

    def by_hash(self, key: str) -> Entry | None:
        """The entry with exactly this hash (no prefix, no name), or None."""
        row = self._row(key)
        return Entry.from_row(row) if row is not None else None

    def get(self, ref: str) -> Entry:
        return Entry.from_row(self._row(self.resolve(ref)))

    def entries(self, name: str | None = None) -> list[Entry]:
        sql = "SELECT * FROM entries" + (" WHERE name = ?" if name else "") + " ORDER BY created_ns, rowid"
        return [Entry.from_row(r) for r in self.conn.execute(sql, (name,) if name else ())]

    def history(self, ref: str) -> list[Entry]:
        """The entry and its ancestors, newest first, to the root."""
        out, key = [], self.resolve(ref)
        while key is not None:
            e = Entry.from_row(self._row(key))
            out.append(e)
            key = e.parent
        return out

    def blob(self, digest: str) -> bytes:
        return self.blobs.get(digest)

    def tunables(self, entry: Entry) -> dict[str, Any]:
        return json.loads(self.blob(entry.tunables))

    # ------------------------------------------------------------------ runs

    def record_run(self, ref: str, kind: str, verdict: str, samples: Iterable[Sample], platform: Platform,
                   actor: Actor, reports: dict[str, bytes] | None = None) -> Run:
        """Keep a verification or benchmark run of an entry: its verdict,
        where it ran, every raw sample, and its reports (JSON, HTML) as
        blobs; audited as `kind` with the verdict."""
        if kind not in RUN_KINDS:
            raise RegistryError(f"unknown run kind {kind!r}", hint=f"one of {', '.join(RUN_KINDS)}")
        if verdict not in VERDICTS:
            raise RegistryError(f"unknown verdict {verdict!r}", hint=f"one of {', '.join(VERDICTS)}")
        samples = list(samples)
        seen = set()
        for s in samples:
            k = (s.stage, s.arm, s.metric, s.run_index)
            if k in seen:
                raise RegistryError(f"two samples for stage {s.stage} arm {s.arm} metric {s.metric} run {s.run_index}")
            seen.add(k)
        stored = {name: self.blobs.put(data) for name, data in (reports or {}).items()}
        author = author_of(actor)
        now = time.time_ns()
        with db.transaction(self.conn):
            key = self.resolve(ref)
            cur = self.conn.execute(
                "INSERT INTO runs(entry, kind, verdict, kernel_release, btf_id, topology, started_ns, author_kind,"
                " author_name, author_uid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key, kind, verdict, platform.kernel_release, platform.btf_id,
                 json.dumps(platform.topology, sort_keys=True), now, author.kind, author.name, author.uid))
            run_id = cur.lastrowid
            self.conn.executemany(
                "INSERT INTO samples(run, stage, arm, metric, run_index, value, unit) VALUES (?,?,?,?,?,?,?)",
                [(run_id, s.stage, s.arm, s.metric, s.run_index, float(s.value), s.unit) for s in samples])
            self.conn.executemany("INSERT INTO run_reports(run, name, blob) VALUES (?,?,?)",
                                  [(run_id, n, d) for n, d in sorted(stored.items())])
            audit.append(self.conn, actor, kind, key,
                         {"run": run_id, "samples": len(samples), "reports": stored,
                          "kernel_release": platform.kernel_release, "btf_id": platform.btf_id}, verdict)
        return self.runs(key)[-1]

    def runs(self, ref: str) -> list[Run]:
        key = self.resolve(ref)
        out = []
        for r in self.conn.execute("SELECT * FROM runs WHERE entry = ? ORDER BY id", (key,)).fetchall():
            reports = {x["name"]: x["blob"] for x in self.conn.execute(
                "SELECT name, blob FROM run_reports WHERE run = ? ORDER BY name", (r["id"],))}
            out.append(Run(r["id"], key, r["kind"], r["verdict"],
                           {"kernel_release": r["kernel_release"], "btf_id": r["btf_id"],
                            "topology": json.loads(r["topology"])}, r["started_ns"],
                           Author(r["author_kind"], r["author_name"], r["author_uid"]), reports))
        return out

    def samples(self, run_id: int) -> list[Sample]:
        return [Sample(r["stage"], r["metric"], r["run_index"], r["value"], r["unit"], r["arm"])
                for r in self.conn.execute("SELECT * FROM samples WHERE run = ? ORDER BY stage, arm, metric, "
                                           "run_index", (run_id,))]

    # ------------------------------------------------------------------ audit, integrity

    def audit_records(self, ref: str | None = None, limit: int | None = None) -> list[audit.Record]:
        return audit.records(self.conn, self.resolve(ref) if ref else None, limit)

    def verify_chain(self, anchor: tuple[int, str] | None = None) -> audit.ChainReport:
        return audit.verify_chain(self.conn, anchor)

    def check(self) -> dict[str, Any]:
        """Everything the index refers to is there and matches its hash; the
        blobs nothing refers to and the scratch of interrupted writes are
        listed (harmless, see the module docstring)."""
        referenced: set[str] = set()
        damaged: list[str] = []
        for r in self.conn.execute("SELECT object, manifest, tunables, model, source FROM entries "
                                   "UNION ALL SELECT blob, NULL, NULL, NULL, NULL FROM run_reports"):
            for d in r:
                if d is not None and d not in referenced:
                    referenced.add(d)
                    try:
                        self.blobs.get(d)
                    except AiosError:
                        damaged.append(d)
        stored = set(self.blobs.digests())
        return {"entries": self.conn.execute("SELECT count(*) FROM entries").fetchone()[0],
                "blobs": len(stored), "damaged": sorted(damaged), "unreferenced": sorted(stored - referenced),
                "scratch": [str(p) for p in self.blobs.scratch()],
                "audit": self.verify_chain().to_dict()}
