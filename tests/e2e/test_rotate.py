"""`labctl authkey rotate` in every mode: a new key everywhere, every node online with it."""

from __future__ import annotations

import stat

from labctl import pacemaker as pcmk

from .conftest import STATE_DIR, host_state, labctl, labctl_json
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


def test_authkey_rotate_on_vm_remote_lab_keeps_every_node_online_and_keys_private(labs, before):
    # One VM remote node (slow under TCG: about a minute to boot), container cluster.
    lab = labs.name()
    labctl(
        "up", "--nodes", "1", "--mode", "remote", "--backend", "vm", "--no-fencing", "--name", lab
    )
    node_dir = STATE_DIR / "labs" / lab / "nodes" / f"{lab}-r1"
    # Its seed carries the node's host key and the lab key: 0600, in a directory
    # QEMU may search but nobody else may list; /root as the seed's copy left it.
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o711
    assert stat.S_IMODE((node_dir / "seed.img").stat().st_mode) == 0o600
    assert not (node_dir / "seed-tree").exists()
    out = labctl("ssh", lab, f"{lab}-r1", "--", "stat -c '%a' / /root /root/.ssh").stdout
    assert out.split() == ["755", "700", "700"]
    _rotate_and_check(lab)
    labctl("down", lab)
    assert host_state() == before
