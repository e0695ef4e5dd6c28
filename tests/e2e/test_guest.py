"""Guest mode on real labs: containers the cluster itself starts, stops and recovers."""

from __future__ import annotations

import time

import libvirt

from labctl import pacemaker as pcmk
from labctl import virt

from .conftest import domain_id, host_state, labctl, labctl_json
from .test_pacemaker import crm_mon


def _guest_states(lab: str) -> dict[str, str]:
    return {
        n["name"]: n["pacemaker"]
        for n in labctl_json("status", lab)["nodes"]
        if n["role"] == "guest"
    }


def test_guest_mode_guests_online_run_a_resource_and_recover_from_destroy(labs, before):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "3", "--mode", "guest", "--name", lab)
    guests = [f"{lab}-g{i}" for i in (1, 2, 3)]
    cluster = [f"{lab}-c1", f"{lab}-c2"]
    by_name = {n["name"]: n for n in up["nodes"]}
    for g in guests:
        assert by_name[g]["pacemaker"] == "GuestOnline"
        assert by_name[g]["runs_on"] in cluster

    view = crm_mon(lab, cluster[0])
    for g in guests:
        node = view.nodes[g]
        assert (node.type, node.online, node.container) == ("remote", True, f"vm-{g}")
        rsc = view.resources[f"vm-{g}"]
        assert rsc.agent == "ocf:heartbeat:VirtualDomain" and rsc.active
        assert rsc.nodes[0] in cluster
    # The resource is configured as Pacemaker's docs describe containers as guests.
    query = f"cibadmin --query --xpath \"//primitive[@id='vm-{guests[0]}']\""
    cfg = labctl("ssh", lab, cluster[0], "--", query).stdout
    assert 'name="force_stop" value="true"' in cfg
    assert 'name="hypervisor" value="lxc:///"' in cfg
    assert f'name="remote-node" value="{guests[0]}"' in cfg

    # A resource placed on a guest node by a location preference starts there.
    labctl(
        "ssh",
        lab,
        cluster[0],
        "--",
        "cibadmin --create --scope resources --xml-text "
        '\'<primitive id="probe" class="ocf" provider="pacemaker" type="Dummy"/>\' && '
        "cibadmin --create --scope constraints --xml-text "
        f'\'<rsc_location id="probe-on-g2" rsc="probe" node="{guests[1]}" score="100"/>\'',
    )
    deadline = time.monotonic() + 60
    while True:
        r = crm_mon(lab, cluster[1]).resources.get("probe")
        if r is not None and r.active and r.nodes == (guests[1],):
            break
        assert time.monotonic() < deadline, f"probe not started on {guests[1]}: {r}"
        time.sleep(1)

    # Crash a guest behind the cluster's back: the cluster notices and brings it back.
    # (Not a plain destroy: libvirt's LXC destroy lets pacemaker_remote leave cleanly.)
    # The cluster may restart it within a second, before any status call sees it
    # offline: a new instance of the domain is what shows it came back.
    conn = libvirt.open("lxc:///")
    try:
        first = conn.lookupByName(guests[2]).ID()
        virt.crash_domain(conn, guests[2])
    finally:
        conn.close()
    deadline = time.monotonic() + 60
    while True:
        again = domain_id(guests[2])
        state = _guest_states(lab)[guests[2]]
        if again not in (None, first) and state == "GuestOnline":
            break
        assert time.monotonic() < deadline, f"{guests[2]} did not come back: {state}"
        time.sleep(0.5)
    view = crm_mon(lab, cluster[1])
    assert pcmk.not_ready(view, {g: "guest" for g in guests}) == {}

    labctl("down", lab)
    assert host_state() == before


def test_fast_down_of_a_guest_lab_leaves_nothing(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "2", "--mode", "guest", "--no-fencing", "--name", lab)
    labctl("down", "--fast", lab)
    assert host_state() == before
