"""Snapshots of a real guest-mode lab (2 cluster nodes + 1 guest, fencing on): guests
are the cluster's to start after a restore, and a guest stopped on purpose when a
snapshot was taken stays stopped after its restore (and is not waited for). Its own
module, so that it never runs beside test_snapshot's lab; always taken down."""

from __future__ import annotations

from .conftest import host_state, labctl, labctl_json
from .test_snapshot import Lab, _nothing_fenced, _of_lab, _resources


def test_guest_lab_restore_leaves_guests_to_the_cluster_and_keeps_a_stopped_one_stopped(
    labs, before
):
    name = labs.name()
    up = labctl_json("up", "--nodes", "1", "--mode", "guest", "--name", name)
    assert isinstance(up, dict)
    g = Lab(name, {n["name"]: n["role"] for n in up["nodes"]})
    guest = f"{name}-g1"
    labctl(
        "ssh", name, g.c1, "--",
        f"crm_resource --resource vm-{guest} --meta --set-parameter target-role "
        "--parameter-value Stopped && crm_resource --wait --timeout 60s",
    )  # fmt: skip
    labctl("snapshot", name, "g-off")
    off = labctl_json("snapshots", "list", name)
    assert isinstance(off, list)
    assert [s["online"] for s in off if s["name"] == "g-off"] == [[f"{name}-c1", f"{name}-c2"]]

    r = labctl_json("reset", name)  # the cluster, not labctl, starts the guest again
    assert isinstance(r, dict)
    assert r["nodes"][guest] == "GuestOnline"
    _nothing_fenced(g)

    r = labctl_json("restore", name, "g-off")  # not waited for: it was stopped
    assert isinstance(r, dict)
    assert r["nodes"].get(guest) != "GuestOnline"
    s = labctl_json("status", name)
    assert isinstance(s, dict)
    assert {n["name"]: n["pacemaker"] for n in s["nodes"]}[guest] != "GuestOnline"
    assert "target-role" in _resources(g)
    _nothing_fenced(g)

    labctl("down", name)
    assert _of_lab(host_state(), name) == _of_lab(before, name)
