"""`up --qdevice`: a corosync-qnetd node breaks the tie of a 2-node cluster, for real."""

from __future__ import annotations

import re

from labctl import pacemaker as pcmk

from .conftest import STATE_DIR, host_state, labctl, labctl_json
from .test_debian13 import _of_lab
from .test_net import poll

QNETD_CA = "etc/corosync/qnetd/nssdb/qnetd-cacert.crt"


def crm_mon_of(lab: str, node: str) -> pcmk.ClusterView:
    out = labctl("ssh", lab, node, "--", "crm_mon", "-1", "--output-as=xml")
    return pcmk.parse_crm_mon(out.stdout)


def _votes(lab: str) -> dict[str, str]:
    s = labctl_json("status", lab)
    assert isinstance(s, dict) and s["qdevice"] is not None, s
    return s["qdevice"]["votes"]


def test_two_nodes_with_a_qdevice_the_side_with_its_vote_keeps_quorum(labs, before):
    lab = labs.name()
    c1, c2, q1 = (f"{lab}-{s}" for s in ("c1", "c2", "q1"))
    up = labctl_json("up", "--nodes", "2", "--qdevice", "--name", lab)
    assert isinstance(up, dict)
    roles = {n["name"]: (n["role"], n["domain"]) for n in up["nodes"]}
    assert roles == {
        c1: ("cluster", "running"),
        c2: ("cluster", "running"),
        q1: ("qnetd", "running"),
    }
    assert up["qdevice"]["node"] == q1 and up["qdevice"]["algorithm"] == "ffsplit"
    assert up["qdevice"]["votes"] == {c1: "ACK", c2: "ACK"}
    quorum = labctl("ssh", lab, c1, "--", "corosync-quorumtool", "-s").stdout
    # The qdevice's vote is counted: 3 expected votes, and no two_node.
    assert re.search(r"Flags:\s+Quorate Qdevice", quorum), quorum
    assert re.search(r"Expected votes:\s+3", quorum), quorum
    # Each lab makes its own qnetd CA: the image's (made when the package was
    # installed, the same everywhere) is not what signed the cluster's certificate.
    ca = labctl("ssh", lab, q1, "--", "cat", f"/{QNETD_CA}").stdout
    layers = list((STATE_DIR / "images/debian12/packages").glob(f"cluster-*/{QNETD_CA}"))
    assert layers and "BEGIN CERTIFICATE" in ca
    assert all(f.read_text() != ca for f in layers)

    # c1 alone against c2 with the qdevice: the lowest node ID (c1) would win a plain
    # 50:50 tie-break; the side that reaches qnetd wins instead.
    labctl("net", lab, "partition", "c1", "c2,q1")

    def c2_quorate_without_c1() -> bool:
        v = crm_mon_of(lab, c2)
        return v.quorate and not v.nodes[c1].online

    poll("c2 quorate, c1 offline (the qdevice's vote on c2's side)", c2_quorate_without_c1)
    quorum = labctl("ssh", lab, c2, "--", "corosync-quorumtool", "-s").stdout
    assert re.search(r"Quorate:\s+Yes", quorum) and "Qdevice" in quorum, quorum

    def c1_fenced() -> bool:
        out = labctl("ssh", lab, c2, "--", "stonith_admin", "--history", c1).stdout
        return "successful" in out

    poll("c1 fenced by c2, the quorate side", c1_fenced)

    labctl("net", lab, "heal")

    def both_back() -> bool:
        v = crm_mon_of(lab, c2)
        return v.quorate and v.nodes[c1].online and v.nodes[c2].online

    poll("both nodes online after heal", both_back, timeout=180)
    poll("qnetd votes ACK for both again", lambda: _votes(lab) == {c1: "ACK", c2: "ACK"})

    labctl("down", lab)
    assert _of_lab(host_state(), lab) == _of_lab(before, lab)
