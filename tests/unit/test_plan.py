import ipaddress
from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.plan import SUPERNET, make_plan, pick_subnet_index
from labctl.spec import make_spec

STATE = Path("/var/lib/labctl")


def test_cluster_lab_names_addresses_and_macs():
    p = make_plan(make_spec("demo", 3), 4, STATE)
    assert [n.name for n in p.nodes] == ["demo-c1", "demo-c2", "demo-c3"]
    assert [str(n.ip) for n in p.nodes] == ["10.213.4.11", "10.213.4.12", "10.213.4.13"]
    assert [n.mac for n in p.nodes] == [
        "52:54:00:d5:04:0b",
        "52:54:00:d5:04:0c",
        "52:54:00:d5:04:0d",
    ]
    assert {n.layer for n in p.nodes} == {"cluster"}
    assert p.network.name == "labctl-demo"
    assert p.network.bridge == "lcbr4"
    assert str(p.network.gateway) == "10.213.4.1"
    assert p.dir == STATE / "labs" / "demo"
    assert p.nodes[0].root == STATE / "labs/demo/nodes/demo-c1/root"


def test_guest_lab_puts_cluster_nodes_first_and_guests_on_the_remote_layer():
    p = make_plan(make_spec("g", 3, mode="guest", cluster_nodes=2), 1, STATE)
    assert [(n.name, n.role, n.layer) for n in p.nodes] == [
        ("g-c1", "cluster", "cluster"),
        ("g-c2", "cluster", "cluster"),
        ("g-g1", "guest", "remote"),
        ("g-g2", "guest", "remote"),
        ("g-g3", "guest", "remote"),
    ]
    assert str(p.nodes[2].ip) == "10.213.1.31"
    assert [n.name for n in p.cluster_nodes] == ["g-c1", "g-c2"]


def test_plan_is_deterministic():
    spec = make_spec("demo", 5, mode="remote")
    assert make_plan(spec, 7, STATE) == make_plan(spec, 7, STATE)


@pytest.mark.parametrize(
    ("others", "cluster", "prefix"),
    [(169, 2, 24), (170, 2, 23), (200, 2, 23), (425, 2, 23), (426, 2, 22), (900, 32, 22)],
)
def test_a_lab_takes_the_smallest_subnet_its_nodes_fit_in_below_the_cts_addresses(
    others, cluster, prefix
):
    p = make_plan(make_spec("big", others, mode="guest", cluster_nodes=cluster), 4, STATE)
    assert p.network.subnet.prefixlen == prefix
    assert p.network.subnet.network_address == ipaddress.ip_address("10.213.4.0")
    n = others + cluster
    assert len(p.nodes) == n
    assert len({n.ip for n in p.nodes}) == n
    assert len({n.mac for n in p.nodes}) == n
    assert all(n.ip in p.network.subnet and n.ip != p.network.gateway for n in p.nodes)
    assert max(int(n.ip) for n in p.nodes) < int(p.network.cts_ip_base)
    assert int(p.network.subnet.broadcast_address) - int(p.network.cts_ip_base) == 55


def test_small_labs_keep_the_addresses_and_macs_they_always_had():
    p = make_plan(make_spec("demo", 3, mode="guest"), 7, STATE)
    assert [str(n.ip) for n in p.nodes][:3] == ["10.213.7.11", "10.213.7.12", "10.213.7.31"]
    assert p.nodes[2].mac == "52:54:00:d5:07:1f"
    assert str(p.network.cts_ip_base) == "10.213.7.200"


def test_thirty_two_cluster_nodes_and_guests_do_not_overlap():
    p = make_plan(make_spec("c", 5, mode="guest", cluster_nodes=32), 1, STATE)
    assert len({n.ip for n in p.nodes}) == 37


def test_a_big_lab_gets_an_aligned_subnet_that_overlaps_nothing_in_use():
    used = [ipaddress.ip_network("10.213.1.0/24"), ipaddress.ip_network("10.213.2.0/24")]
    assert pick_subnet_index(used, 23) == 4
    assert pick_subnet_index(used, 22) == 4
    assert pick_subnet_index([ipaddress.ip_network("10.213.5.0/24")], 22) == 8


def test_pick_subnet_skips_used_networks_and_host_routes():
    used = [ipaddress.ip_network("10.213.1.0/24"), ipaddress.ip_network("10.213.2.128/25")]
    assert pick_subnet_index(used) == 3
    assert pick_subnet_index([]) == 1


def test_pick_subnet_refuses_when_the_block_is_full():
    with pytest.raises(UsageError, match="no free"):
        pick_subnet_index([SUPERNET])


def test_unknown_node_name_lists_the_lab_nodes():
    p = make_plan(make_spec("demo", 2), 1, STATE)
    with pytest.raises(UsageError, match="demo-c1, demo-c2"):
        p.node("demo-c9")


def test_vm_backend_makes_remote_and_guest_nodes_vms_and_keeps_their_cluster_in_containers():
    p = make_plan(make_spec("v", 2, mode="remote", backend="vm"), 1, STATE)
    assert [(n.name, n.backend) for n in p.nodes] == [
        ("v-c1", "lxc"),
        ("v-c2", "lxc"),
        ("v-r1", "vm"),
        ("v-r2", "vm"),
    ]
    assert [n.name for n in p.vm_nodes] == ["v-r1", "v-r2"]
    c = make_plan(make_spec("v", 2, backend="vm"), 1, STATE)
    assert {n.backend for n in c.nodes} == {"vm"}
    assert p.pool == "labctl-v"
    assert p.nodes[2].seed == STATE / "labs/v/nodes/v-r1/seed.img"
