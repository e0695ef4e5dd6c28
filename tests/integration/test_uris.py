"""Each backend's libvirt URI is labctl's own choice: LIBVIRT_DEFAULT_URI (a virsh
user's setting) is not it; LABCTL_LXC_URI / LABCTL_QEMU_URI point labctl elsewhere,
and every command (up, status, list, down) uses the same one."""

from __future__ import annotations

import contextlib

import libvirt
import pytest
from typer.testing import CliRunner

from labctl import virt
from labctl.cli import app

TEST = "test:///default"
NET = """<network>
  <name>labctl-hpuri</name>
  <bridge name='hpuri0'/>
  <ip address='192.0.2.17' netmask='255.255.255.240'/>
</network>"""


def test_libvirt_default_uri_does_not_pick_the_container_driver(monkeypatch):
    monkeypatch.delenv("LABCTL_LXC_URI", raising=False)
    monkeypatch.delenv("LABCTL_QEMU_URI", raising=False)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    assert virt.default_uri("lxc") == "lxc:///"
    assert virt.default_uri("vm") == "qemu:///system"
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "lxc:///")
    assert virt.default_uri("vm") == "qemu:///system"


def test_labctl_uri_variables_point_each_backend_elsewhere(monkeypatch):
    monkeypatch.setenv("LABCTL_LXC_URI", "lxc+ssh://root@h/")
    monkeypatch.setenv("LABCTL_QEMU_URI", "qemu+ssh://root@h/system")
    assert virt.default_uri("lxc") == "lxc+ssh://root@h/"
    assert virt.default_uri("vm") == "qemu+ssh://root@h/system"


@pytest.fixture
def test_driver(monkeypatch):
    monkeypatch.setenv("LABCTL_LXC_URI", TEST)
    monkeypatch.setenv("LABCTL_QEMU_URI", TEST)
    conn = libvirt.open(TEST)
    conn.networkDefineXML(NET)
    yield conn
    with contextlib.suppress(libvirt.libvirtError):
        conn.networkLookupByName("labctl-hpuri").undefine()
    conn.close()


def test_list_status_and_down_use_labctls_uri(test_driver, tmp_path):
    state = str(tmp_path / "state")
    r = CliRunner().invoke(app, ["list", "--state-dir", state])
    assert r.exit_code == 0, r.output
    assert "hpuri" in r.stdout
    r = CliRunner().invoke(app, ["status", "hpuri", "--state-dir", state])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["down", "hpuri", "--state-dir", state])
    assert r.exit_code == 0, r.output
    assert "the network" in r.stdout
    assert "labctl-hpuri" not in test_driver.listDefinedNetworks()
