"""`labctl net` reads each node's links from libvirt, and believes a MAC only where it is
the lab's own (libvirt's data is untrusted: rules made from it could cut another lab)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from labctl import net, plan, virt
from labctl.errors import HostError
from labctl.spec import make_spec


def _plan():
    return plan.make_plan(make_spec("ab", 2, links=2), 3, Path("/s"))


def _fake(monkeypatch, links_of):
    monkeypatch.setattr(virt, "connection", lambda _uri: contextlib.nullcontext(None))
    monkeypatch.setattr(virt, "domain_links", lambda _conn, name: links_of.get(name))


def test_the_lab_s_own_macs_give_each_node_its_links(monkeypatch):
    p = _plan()
    _fake(
        monkeypatch,
        {
            n.name: [
                virt.DomainLink(m.upper(), f"vnet{i}", "lcbr3")
                for i, m in enumerate((n.mac, *n.link_macs))
            ]
            for n in p.nodes
        },
    )
    links = net.node_links(p)
    c1 = p.nodes[0]
    assert [(lk.index, lk.mac) for lk in links[c1.name]] == [(0, c1.mac), (1, c1.link_macs[0])]


@pytest.mark.parametrize("which", [0, 1])
def test_a_mac_that_is_not_the_lab_s_is_refused(monkeypatch, which):
    p = _plan()
    stranger = "52:54:00:d5:09:0b"  # another lab's node, say
    fake = {}
    for n in p.nodes:
        macs = [n.mac, *n.link_macs]
        if n is p.nodes[1]:
            macs[which] = stranger
        fake[n.name] = [virt.DomainLink(m, None, None) for m in macs]
    _fake(monkeypatch, fake)
    with pytest.raises(HostError, match=f"link {which} has MAC {stranger}, not the lab's"):
        net.node_links(p)


def test_a_link_the_plan_does_not_have_is_refused(monkeypatch):
    p = plan.make_plan(make_spec("ab", 1), 3, Path("/s"))
    n = p.nodes[0]
    _fake(
        monkeypatch,
        {n.name: [virt.DomainLink(n.mac, None, None), virt.DomainLink(n.mac, None, None)]},
    )
    with pytest.raises(HostError, match="no such link"):
        net.node_links(p)
