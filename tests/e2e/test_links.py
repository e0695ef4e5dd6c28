"""`up --links 2`: every cluster node on two corosync knet links; with link 0 cut on
every node (`labctl net ... down all --link 0`) the cluster stays quorate on link 1,
and `labctl exec` still reaches the nodes (over link 1)."""

from __future__ import annotations

import time

from .conftest import host_state, labctl, labctl_json


def _cfgtool(lab: str, node: str) -> str:
    return labctl("exec", lab, "--node", node, "--", "corosync-cfgtool -s").stdout


def _link_states(text: str) -> dict[int, set[str]]:
    """corosync-cfgtool -s: link id -> the states of the other nodes on it."""
    out: dict[int, set[str]] = {}
    link = None
    for line in text.splitlines():
        if line.startswith("LINK ID"):
            link = int(line.split()[2])
            out[link] = set()
        elif link is not None and "nodeid" in line and "localhost" not in line:
            out[link].add(line.split(":")[-1].strip())
    return out


def _wait_for(lab: str, node: str, want: dict[int, set[str]], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = _cfgtool(lab, node)
        if _link_states(text) == want or time.monotonic() > deadline:
            return text
        time.sleep(2)


def test_two_links_keep_the_cluster_quorate_with_link_0_cut_everywhere(labs, before):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "3", "--links", "2", "--name", lab)
    for n in up["nodes"]:
        # link 1's address: the same host number in the /16 after the lab's
        assert [a.split(".")[1] for a in n["link_ips"]] == ["214"], n
        assert n["link_ips"][0].split(".")[2:] == n["ip"].split(".")[2:], n
    c2 = f"{lab}-c2"
    text = _wait_for(lab, c2, {0: {"connected"}, 1: {"connected"}})
    assert _link_states(text) == {0: {"connected"}, 1: {"connected"}}, text

    labctl("net", lab, "down", "all", "--link", "0")
    text = _wait_for(lab, c2, {0: {"disconnected"}, 1: {"connected"}})
    assert _link_states(text) == {0: {"disconnected"}, 1: {"connected"}}, text
    quorum = labctl("exec", lab, "--node", c2, "--", "corosync-quorumtool -s").stdout
    assert "Quorate:          Yes" in quorum, quorum
    mon = labctl("exec", lab, "--node", c2, "--", "crm_mon -1").stdout
    assert f"Online: [ {lab}-c1 {lab}-c2 {lab}-c3 ]" in mon, mon

    labctl("net", lab, "up", "all", "--link", "0")
    text = _wait_for(lab, c2, {0: {"connected"}, 1: {"connected"}})
    assert _link_states(text) == {0: {"connected"}, 1: {"connected"}}, text

    labctl("down", lab)
    assert host_state() == before
