"""The host probe (tests/data/bpf), compiled once for the bpf tier's tests
against the host kernel (tests/bpf/test_{object,maps,ringbuf,loader}.py)."""
from pathlib import Path

import pytest

from aios_lab.bpf import BpfObject

from tests.helpers import DATA


@pytest.fixture(scope="session")
def objdir(tmp_path_factory) -> Path:
    from aios_lab.build import compile_bpf

    d = tmp_path_factory.mktemp("bpfobj")
    compile_bpf(DATA / "bpf" / "host_probe.bpf.c", d / "host_probe.bpf.o")
    compile_bpf(DATA / "bpf" / "bad_verifier.bpf.c", d / "bad_verifier.bpf.o")
    return d


@pytest.fixture
def probe(objdir):
    """A fresh, opened (not loaded) probe object, closed after the test."""
    with BpfObject.open(objdir / "host_probe.bpf.o") as obj:
        yield obj
