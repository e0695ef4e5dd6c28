"""`labctl authkey rotate` in every mode: a new key everywhere, every node online with it.
A VM remote node's rotation is in test_vm's remote-mode test, on its lab."""

from __future__ import annotations

from labctl import pacemaker as pcmk

from .conftest import host_state, labctl, labctl_json
from .test_pacemaker import authkey_facts, crm_mon, lab_authkey_digest


def _rotate_and_check(lab: str) -> None:
    """Rotate LAB's authkey; every node online in its role, every node holding the new key."""
    roles = {n["name"]: n["role"] for n in labctl_json("status", lab)["nodes"]}
    old = lab_authkey_digest(lab)
    labctl("authkey", "rotate", lab)
    new = lab_authkey_digest(lab)
    assert new != old
    view = crm_mon(lab, f"{lab}-c1")
    assert pcmk.not_ready(view, roles) == {}
    # Maintenance mode, if rotation used it, is lifted again.
    assert labctl_json("status", lab)["properties"].get("maintenance-mode") != "true"
    for n in roles:
        assert authkey_facts(lab, n) == (new, "root:haclient 640"), n


def test_authkey_rotate_on_guest_lab_keeps_every_node_online(labs, before):
    # Fencing on, as users have it: stopping the stack must fence nothing.
    lab = labs.name()
    labctl("up", "--nodes", "2", "--mode", "guest", "--name", lab)
    _rotate_and_check(lab)
    history = labctl(
        "ssh", lab, f"{lab}-c1", "--", "stonith_admin --history '*' --output-as=xml"
    ).stdout
    assert "<fence_event" not in history, history
    labctl("down", lab)
    assert host_state() == before


def test_authkey_rotate_on_remote_lab_keeps_every_node_online(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "1", "--mode", "remote", "--no-fencing", "--name", lab)
    _rotate_and_check(lab)
    labctl("down", lab)
    assert host_state() == before


def test_authkey_rotate_on_cluster_lab_keeps_every_node_online(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "2", "--mode", "cluster", "--no-fencing", "--name", lab)
    _rotate_and_check(lab)
    labctl("down", lab)
    assert host_state() == before
