"""Pacemaker on real labs: cluster and remote modes, authkey, what the cluster itself reports."""

from __future__ import annotations

import hashlib
import time

import libvirt

from labctl import pacemaker as pcmk

from .conftest import STATE_DIR, host_state, labctl, labctl_json


def crm_mon(lab: str, node: str) -> pcmk.ClusterView:
    out = labctl("ssh", lab, node, "--", "crm_mon", "--one-shot", "--inactive", "--output-as=xml")
    return pcmk.parse_crm_mon(out.stdout)


def authkey_facts(lab: str, node: str) -> tuple[str, str]:
    out = labctl(
        "ssh",
        lab,
        node,
        "--",
        "sha256sum /etc/pacemaker/authkey; stat -c '%U:%G %a' /etc/pacemaker/authkey",
    ).stdout.splitlines()
    return out[0].split()[0], out[1]


def lab_authkey_digest(lab: str) -> str:
    return hashlib.sha256((STATE_DIR / "labs" / lab / "authkey").read_bytes()).hexdigest()


def test_cluster_mode_three_nodes_online_with_one_authkey_and_real_fencing(labs, before):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "3", "--mode", "cluster", "--name", lab)
    names = [f"{lab}-c{i}" for i in (1, 2, 3)]
    assert [(n["name"], n["pacemaker"]) for n in up["nodes"]] == [(n, "Online") for n in names]

    # Pacemaker's own view, read on a node other than the one labctl asked.
    view = crm_mon(lab, names[2])
    assert view.quorate and view.dc in names
    assert {n: (v.type, v.online) for n, v in view.nodes.items()} == {
        n: ("member", True) for n in names
    }
    # The configuration labctl made passes Pacemaker's own check.
    labctl("ssh", lab, names[1], "--", "crm_verify", "--live-check")

    digest = lab_authkey_digest(lab)
    for n in names:
        assert authkey_facts(lab, n) == (digest, "root:haclient 640")

    st = labctl_json("status", lab)
    assert st["properties"]["stonith-enabled"] == "true"
    assert st["fencing"] == "enabled"
    assert view.resources["fence-xvm"].agent == "stonith:fence_xvm"
    assert view.resources["fence-xvm"].active
    # The lab's own fence_virtd runs on the host while the lab is up.
    assert host_state().fence_virtds - before.fence_virtds

    # Fence through the cluster's own path: the node really reboots and rejoins.
    conn = libvirt.open("lxc:///")
    try:
        old_id = conn.lookupByName(names[1]).ID()
        labctl("fence", lab, names[1])
        assert conn.lookupByName(names[1]).ID() != old_id
    finally:
        conn.close()
    history = labctl("ssh", lab, names[0], "--", "stonith_admin", "--history", names[1]).stdout
    assert f"reboot of {names[1]} successful" in history
    view = crm_mon(lab, names[0])
    assert pcmk.not_ready(view, dict.fromkeys(names, "cluster")) == {}

    labctl("down", lab)
    assert host_state() == before


def test_remote_mode_remote_nodes_online_stop_seen_and_authkey_rotated(labs, before):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "3", "--mode", "remote", "--no-fencing", "--name", lab)
    states = {n["name"]: (n["role"], n["pacemaker"]) for n in up["nodes"]}
    assert states == {
        f"{lab}-c1": ("cluster", "Online"),
        f"{lab}-c2": ("cluster", "Online"),
        f"{lab}-r1": ("remote", "RemoteOnline"),
        f"{lab}-r2": ("remote", "RemoteOnline"),
        f"{lab}-r3": ("remote", "RemoteOnline"),
    }
    view = crm_mon(lab, f"{lab}-c2")
    for i in (1, 2, 3):
        node = view.nodes[f"{lab}-r{i}"]
        assert (node.type, node.online) == ("remote", True)
        res = view.resources[f"{lab}-r{i}"]
        assert res.agent == "ocf:pacemaker:remote" and res.active
    digest = lab_authkey_digest(lab)
    for n in states:
        assert authkey_facts(lab, n) == (digest, "root:haclient 640")

    # Stop pacemaker_remote behind the cluster's back: Pacemaker notices, status says so.
    labctl("ssh", lab, f"{lab}-r2", "--", "systemctl", "stop", "pacemaker_remote")
    deadline = time.monotonic() + 90
    while True:
        st = {n["name"]: n["pacemaker"] for n in labctl_json("status", lab)["nodes"]}
        if st[f"{lab}-r2"] == "RemoteOFFLINE":
            break
        assert time.monotonic() < deadline, f"the cluster did not see r2 stop: {st}"
        time.sleep(1)
    assert st[f"{lab}-r1"] == st[f"{lab}-r3"] == "RemoteOnline"
    status = labctl_json("status", lab)
    assert status["fencing"].startswith("not configured")
    assert any("fencing is not configured" in note for note in status["notes"])

    # Rotation: a new key, the same on every node, and every node online with it.
    labctl("authkey", "rotate", lab)
    new = lab_authkey_digest(lab)
    assert new != digest
    for n in states:
        assert authkey_facts(lab, n) == (new, "root:haclient 640")
    view = crm_mon(lab, f"{lab}-c1")
    assert pcmk.not_ready(view, {n: r for n, (r, _) in states.items()}) == {}

    labctl("down", lab)
    assert host_state() == before
