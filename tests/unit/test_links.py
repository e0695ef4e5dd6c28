"""`up --links 2`: a second corosync link on a network of its own, for cluster nodes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from lxml import etree

from labctl import pacemaker, plan, provision
from labctl.errors import UsageError
from labctl.spec import make_spec
from labctl.xml import link_network_xml, lxc_domain_xml


def _plan(links: int = 2, mode: str = "cluster", nodes: int = 3, index: int = 7):
    return plan.make_plan(make_spec("ab", nodes, mode=mode, links=links), index, Path("/s"))


def test_cluster_nodes_get_an_address_and_mac_on_link_1_at_the_same_host_number():
    p = _plan(mode="remote", nodes=2)
    assert [(link.name, link.bridge, str(link.subnet)) for link in p.links] == [
        ("lclink1-ab", "lclk1x7", "10.214.7.0/24")
    ]
    assert all(len(link.bridge) <= 15 for link in p.links)  # the kernel's limit
    for n in p.cluster_nodes:
        assert n.link_ips == (ipaddress.IPv4Address(str(n.ip).replace("10.213.", "10.214.")),)
    remotes = [n for n in p.nodes if n.role == "remote"]
    assert remotes and all(n.link_ips == () and n.link_macs == () for n in remotes)
    macs = [n.mac for n in p.nodes] + [m for n in p.nodes for m in n.link_macs]
    assert len(set(macs)) == len(macs)


def test_one_link_is_the_lab_as_before():
    p = _plan(links=1)
    assert p.links == () and all(n.link_ips == () for n in p.nodes)
    assert "ring1_addr" not in pacemaker.corosync_conf(p)


def test_corosync_gets_ring1_addr_and_the_node_a_fixed_address_by_mac():
    p = _plan()
    conf = pacemaker.corosync_conf(p)
    c1 = p.cluster_nodes[0]
    assert f"ring0_addr: {c1.ip}\n        ring1_addr: {c1.link_ips[0]}\n" in conf
    text = provision.link_network_file(p, 1, c1.link_ips[0], c1.link_macs[0])
    assert f"MACAddress={c1.link_macs[0]}\n" in text
    assert f"Address={c1.link_ips[0]}/24\n" in text
    assert "DHCP" not in text


def test_the_container_has_one_nic_per_link_in_link_order():
    p = _plan(mode="remote", nodes=1)
    c1 = p.cluster_nodes[0]
    dom = etree.fromstring(lxc_domain_xml(p, c1, legacy_cgroups=False).encode())
    nics = [
        (i.find("source").get("network"), i.find("mac").get("address"))
        for i in dom.iter("interface")
    ]
    assert nics == [("labctl-ab", c1.mac), ("lclink1-ab", c1.link_macs[0])]
    r1 = next(n for n in p.nodes if n.role == "remote")
    dom = etree.fromstring(lxc_domain_xml(p, r1, legacy_cgroups=False).encode())
    assert len(list(dom.iter("interface"))) == 1


def test_the_link_network_is_a_bare_bridge_with_the_hosts_address():
    net = etree.fromstring(link_network_xml(_plan().links[0]).encode())
    assert net.findtext("name") == "lclink1-ab"
    assert net.find("bridge").get("name") == "lclk1x7"
    assert net.find("ip").get("address") == "10.214.7.1"
    assert net.find("forward") is None and net.find("ip/dhcp") is None
    assert net.find("dns").get("enable") == "no"


def test_the_link_networks_name_is_never_read_as_a_lab():
    assert plan.lab_of_network("lclink1-ab") is None
    assert plan.link_network_names("ab") == ("lclink1-ab",)


def test_a_subnet_is_picked_only_where_link_1_is_free_too():
    used = [ipaddress.IPv4Network("10.214.1.0/24")]  # someone's network on link 1's place
    assert plan.pick_subnet_index(used, 24, links=1) == 1
    assert plan.pick_subnet_index(used, 24, links=2) == 2


def test_known_hosts_pins_the_key_for_link_addresses_too():
    p = _plan()
    text = provision.known_hosts_lines(p, {n.name: "ssh-ed25519 AAAA" for n in p.nodes})
    c1 = p.cluster_nodes[0]
    assert f"{c1.name},{c1.ip},{c1.link_ips[0]} ssh-ed25519 AAAA" in text


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"links": 3}, "--links must be 1 or 2"),
        ({"links": 0}, "--links must be 1 or 2"),
        ({"links": 2, "backend": "vm"}, "VM cluster nodes cannot take it yet"),
    ],
)
def test_links_that_cannot_be_made_are_one_line_errors(kwargs, says):
    with pytest.raises(UsageError, match=says):
        make_spec("ab", 3, **kwargs)


def test_vm_remote_nodes_with_container_cluster_nodes_take_two_links():
    s = make_spec("ab", 1, mode="remote", backend="vm", links=2)
    p = plan.make_plan(s, 3, Path("/s"))
    assert all(n.backend == "lxc" and n.link_ips for n in p.cluster_nodes)
