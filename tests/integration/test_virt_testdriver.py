"""virt's API paths against libvirt's built-in test driver (no daemon needed)."""

import re
from pathlib import Path

import libvirt
import pytest

from labctl import virt
from labctl.errors import HostError
from labctl.plan import make_plan
from labctl.spec import make_spec
from labctl.xml import METADATA_NS, network_xml

TEST_DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <memory>65536</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def conn():
    # test:///default is one shared in-process state: leave it as it was found.
    c = virt.connect("test:///default")
    yield c
    for d in virt.lab_domains(c):
        virt.remove_domain(c, d.name)
    for net in virt.lab_networks(c).values():
        virt.remove_network(c, net)
    c.close()


def _define(conn, name: str, lab: str | None) -> None:
    dom = conn.defineXML(TEST_DOMAIN.format(name=name))
    if lab:
        meta = f'<lab name="{lab}" role="cluster" node="{name}" state-dir="/s"/>'
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, "labctl", METADATA_NS)
    dom.create()


def test_lab_domains_finds_only_labctl_domains_of_the_lab(conn):
    _define(conn, "a-c1", "a")
    _define(conn, "a-c2", "a")
    _define(conn, "b-c1", "b")
    _define(conn, "foreign", None)
    assert [d.name for d in virt.lab_domains(conn, "a")] == ["a-c1", "a-c2"]
    assert {d.meta.lab for d in virt.lab_domains(conn)} == {"a", "b"}
    assert all(d.state == "running" for d in virt.lab_domains(conn, "a"))


def test_remove_domain_is_idempotent(conn):
    _define(conn, "a-c1", "a")
    assert virt.remove_domain(conn, "a-c1") is True
    assert virt.remove_domain(conn, "a-c1") is False
    assert virt.lab_domains(conn, "a") == []


def test_lab_network_create_list_subnets_and_remove(conn):
    p = make_plan(make_spec("demo", 2), 5, Path("/s"))
    virt.create_network(conn, network_xml(p.network, p.nodes))
    assert virt.lab_networks(conn) == {"demo": "labctl-demo"}
    assert p.network.subnet in virt.network_subnets(conn)
    assert virt.remove_network(conn, "labctl-demo") is True
    assert virt.remove_network(conn, "labctl-demo") is False
    assert "demo" not in virt.lab_networks(conn)


def test_unreachable_daemon_is_a_host_error_naming_the_fix():
    with pytest.raises(HostError, match="scripts/setup-host"):
        virt.connect("lxc+unix:///system?socket=/nonexistent/sock")


def test_suspend_and_resume_pause_a_running_domain_and_leave_others_alone(conn):
    _define(conn, "snap-c1", "snap")
    assert virt.suspend_domain(conn, "snap-c1") is True
    assert conn.lookupByName("snap-c1").state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert virt.suspend_domain(conn, "snap-c1") is False  # paused already: not again
    virt.resume_domain(conn, "snap-c1")
    assert conn.lookupByName("snap-c1").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    virt.resume_domain(conn, "snap-c1")  # running: nothing to do
    # A guest the cluster stopped has no domain: nothing to pause or resume.
    assert virt.suspend_domain(conn, "snap-g1") is False
    virt.resume_domain(conn, "snap-g1")


def test_a_domains_snapshot_is_taken_listed_reverted_paused_and_deleted(conn):
    _define(conn, "a-r1", "a")
    virt.create_snapshot(conn, "a-r1", "<domainsnapshot><name>s1</name></domainsnapshot>")
    assert virt.snapshot_names(conn, "a-r1") == ["s1"]
    assert virt.snapshot_names(conn, "no-such") == []
    virt.revert_snapshot(conn, "a-r1", "s1")
    assert conn.lookupByName("a-r1").state()[0] == libvirt.VIR_DOMAIN_PAUSED
    virt.resume_domain(conn, "a-r1")
    assert virt.delete_snapshot(conn, "a-r1", "s1") is True
    assert virt.delete_snapshot(conn, "a-r1", "s1") is False  # gone: not an error
    assert virt.delete_snapshot(conn, "no-such", "s1") is False
    with pytest.raises(
        virt.VirtError, match=re.escape("revertToSnapshot of domain a-r1 (snapshot s1)")
    ):
        virt.revert_snapshot(conn, "a-r1", "s1")


def test_a_stopped_domain_reverted_to_a_snapshot_taken_while_stopped_stays_stopped(conn):
    _define(conn, "a-r2", "a")
    conn.lookupByName("a-r2").destroy()
    assert virt.domain_active(conn, "a-r2") is False
    virt.create_snapshot(conn, "a-r2", "<domainsnapshot><name>off</name></domainsnapshot>")
    conn.lookupByName("a-r2").create()
    virt.revert_snapshot(conn, "a-r2", "off")
    assert virt.domain_active(conn, "a-r2") is False
    assert virt.domain_active(conn, "no-such") is False
    virt.delete_snapshot(conn, "a-r2", "off")
