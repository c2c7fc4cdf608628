"""aios_lab.control.store: blobs named by their sha256, written whole or not at all."""
from __future__ import annotations

import hashlib
import os

import pytest

from aios_lab.control.store import BlobStore
from aios_lab.errors import RegistryCorrupt, RegistryError


def test_round_trip_and_name_is_the_hash(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put(b"policy bytes")
    assert digest == hashlib.sha256(b"policy bytes").hexdigest()
    assert store.path(digest) == tmp_path / "blobs" / digest[:2] / digest[2:]
    assert store.get(digest) == b"policy bytes"
    assert store.put(b"policy bytes") == digest  # idempotent
    assert list(store.digests()) == [digest]


def test_damaged_or_missing_blob_is_an_integrity_error(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put(b"abc")
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"abd")
    with pytest.raises(RegistryCorrupt, match="does not match its hash"):
        store.get(digest)
    path.unlink()
    with pytest.raises(RegistryCorrupt, match="missing"):
        store.get(digest)


@pytest.mark.parametrize("bad", ["", "abc", "G" * 64, "a" * 63, "../" + "a" * 61])
def test_a_name_that_is_not_a_digest_is_refused(tmp_path, bad):
    with pytest.raises(RegistryError, match="not a sha256"):
        BlobStore(tmp_path).path(bad)


def test_scratch_of_a_dead_writer_is_swept_not_taken_for_a_blob(tmp_path):
    store = BlobStore(tmp_path)
    digest = hashlib.sha256(b"x").hexdigest()
    folder = store.path(digest).parent
    folder.mkdir(parents=True)
    # What open_atomic leaves when its writer is SIGKILLed: a dot file with the writer's pid.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    scratch = folder / f".{digest[2:]}.tmp-{pid}-abc.tmp"
    scratch.write_bytes(b"half")
    assert list(store.digests()) == [] and store.scratch() == [scratch]
    assert store.sweep() == [scratch] and not scratch.exists()
    assert store.put(b"x") == digest and store.get(digest) == b"x"
