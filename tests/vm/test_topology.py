import pytest

from aios_lab.errors import VmError
from aios_lab.vm.topology import Topology, parse_memory, parse_topology


def test_default_is_one_socket():
    t = Topology(cpus=2)
    assert t.smp() == (1, 2, 1)
    assert t.vng_args() == ["--cpus", "2", "--memory", "2048M"]


def test_numa_nodes_get_one_socket_and_an_even_share_each():
    t = Topology(cpus=4, memory_mb=2048, numa_nodes=2)
    assert t.smp() == (2, 2, 1)
    assert t.qemu_smp() == "-smp 4,sockets=2,cores=2,threads=1"
    args = t.vng_args()
    assert args[args.index("--numa") + 1] == "1024M,cpus=0-1"
    assert args[-1] == "1024M,cpus=2-3"


def test_single_cpu_nodes():
    t = Topology(cpus=2, memory_mb=1024, numa_nodes=2)
    assert t.vng_args()[-1] == "512M,cpus=1"


@pytest.mark.parametrize("kw", [dict(cpus=3, numa_nodes=2), dict(cpus=4, sockets=3), dict(cpus=0),
                                dict(cpus=2, memory_mb=100)])
def test_impossible_topologies_are_refused(kw):
    with pytest.raises(VmError):
        Topology(**kw)


def test_parse_memory_and_topology():
    assert parse_memory("2G") == 2048 and parse_memory("1536M") == 1536 and parse_memory("512") == 512
    with pytest.raises(VmError):
        parse_memory("lots")
    assert parse_topology("sockets=2,cores=2,threads=1") == {"sockets": 2, "cores": 2, "threads": 1}
    assert parse_topology(None) == {}
    with pytest.raises(VmError):
        parse_topology("dies=2")
