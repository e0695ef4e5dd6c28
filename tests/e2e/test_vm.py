"""VM nodes (QEMU; TCG where KVM cannot run Linux) in a lab, on the real libvirtd."""

from __future__ import annotations

import libvirt

from labctl import host

from .conftest import host_state, labctl, labctl_json
from .test_pacemaker import authkey_facts, crm_mon, lab_authkey_digest


def test_remote_mode_with_a_vm_remote_node_is_remote_online_then_down_leaves_nothing(labs, before):
    lab = labs.name()
    up = labctl_json(
        "up",
        "--nodes",
        "1",
        "--mode",
        "remote",
        "--backend",
        "vm",
        "--cluster-nodes",
        "1",
        "--name",
        lab,
    )
    vm = f"{lab}-r1"
    by_name = {n["name"]: n for n in up["nodes"]}
    assert by_name[vm]["pacemaker"] == "RemoteOnline"

    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(vm)
        assert dom.isActive()
        expected = "kvm" if host.kvm_status()[0] else "qemu"
        assert (
            f"<domain type='{expected}'" in dom.XMLDesc() or f'type="{expected}"' in dom.XMLDesc()
        )
    finally:
        conn.close()
    # A real kernel of its own, and Pacemaker's view of it.
    assert "cloud" in labctl("ssh", lab, vm, "--", "uname", "-r").stdout
    view = crm_mon(lab, f"{lab}-c1")
    assert (view.nodes[vm].type, view.nodes[vm].online) == ("remote", True)
    assert authkey_facts(lab, vm) == (lab_authkey_digest(lab), "root:haclient 640")

    labctl("down", lab)
    assert host_state() == before
