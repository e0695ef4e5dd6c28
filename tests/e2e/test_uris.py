"""LIBVIRT_DEFAULT_URI set for virsh does not steer labctl: containers still go to lxc:///."""

from __future__ import annotations

import json

import libvirt

from .conftest import host_state, labctl


def test_up_status_down_with_libvirt_default_uri_set_to_qemu(labs, monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    lab = labs.name()
    try:
        labctl("up", "--nodes", "1", "--name", lab, "--no-fencing")
        conn = libvirt.open("lxc:///")
        try:
            assert conn.lookupByName(f"{lab}-c1").isActive()
        finally:
            conn.close()
        s = json.loads(labctl("status", lab, "--json").stdout)
        assert [(n["name"], n["domain"], n["pacemaker"]) for n in s["nodes"]] == [
            (f"{lab}-c1", "running", "Online")
        ]
        assert s["network"] == f"labctl-{lab}"
        assert lab in labctl("list").stdout
        r = labctl("down", lab)
        assert "removed 1 domain(s), the network" in r.stdout
    finally:
        labctl("down", lab, check=False)
    after = host_state()
    for objects in (after.domains, after.networks, after.pools, after.mounts, after.lab_dirs):
        assert not [o for o in objects if lab in o]
