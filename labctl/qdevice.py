"""A quorum device (`up --qdevice`): corosync-qnetd on the lab's qnetd node, and
corosync-qdevice on its cluster nodes, with certificates made by corosync's own tools.

The configuration and the parsing of corosync-qnetd-tool are pure; `setup` and `view`
talk to the nodes over labctl's SSH."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from labctl import ssh
from labctl.errors import LabctlError
from labctl.plan import LabPlan, NodePlan

QNETD_DB = "/etc/corosync/qnetd/nssdb"
QDEVICE_DB = "/etc/corosync/qdevice/net/nssdb"
SETUP_TIMEOUT = 120.0
VOTE_TIMEOUT = 90.0

# lab.connect, passed in: lab calls this module while it sets a lab up.
ConnectFn = Callable[[LabPlan, NodePlan], ssh.Connection]


def algorithm(cluster_nodes: int) -> str:
    """ffsplit for an even number of cluster nodes (its vote goes to one half of a
    50:50 split), lms otherwise: what corosync-qdevice(8) recommends for each."""
    return "ffsplit" if cluster_nodes % 2 == 0 else "lms"


def device_conf(p: LabPlan) -> str:
    """corosync.conf's quorum.device section for the lab's qnetd node ("" without one)."""
    if p.qnetd is None:
        return ""
    alg = algorithm(len(p.cluster_nodes))
    # ffsplit refuses to start without it; lms takes votequorum's default (nodes - 1).
    votes = "        votes: 1\n" if alg == "ffsplit" else ""
    return (
        "    device {\n"
        "        model: net\n"
        f"{votes}"
        "        net {\n"
        f"            host: {p.qnetd.ip}\n"
        f"            algorithm: {algorithm(len(p.cluster_nodes))}\n"
        "            tls: on\n"
        "        }\n"
        "    }"
    )


def quick_start_command(p: LabPlan) -> str:
    """corosync-qdevice-net-certutil's quick start, run on the first cluster node: over
    the nodes' own root SSH it makes the qnetd CA and server certificate, a certificate
    request on that node, has the qnetd node sign it, and imports it on every cluster
    node (the cluster name must be corosync.conf's cluster_name: the lab's name)."""
    assert p.qnetd is not None
    names = [n.name for n in p.cluster_nodes]
    return shlex.join(["corosync-qdevice-net-certutil", "-Q", "-n", p.name, p.qnetd.name, *names])


@dataclass(frozen=True)
class QnetdClient:
    node_id: int
    address: str
    vote: str  # "ACK", "NACK", "No change", ... (its current vote, as qnetd says)


@dataclass
class QnetdCluster:
    name: str
    algorithm: str = ""
    tie_breaker: str = ""
    clients: list[QnetdClient] = field(default_factory=list)


_CLUSTER_RE = re.compile(r'^Cluster "([^"]+)":\s*$')
_NODE_RE = re.compile(r"^\s+Node ID (\d+):\s*$")
_FIELD_RE = re.compile(r"^\s+([A-Za-z -]+):\s+(.*?)\s*$")


def parse_qnetd_list(text: str) -> dict[str, QnetdCluster]:
    """`corosync-qnetd-tool -l` (text) -> its clusters by name; pure."""
    clusters: dict[str, QnetdCluster] = {}
    cluster: QnetdCluster | None = None
    node: dict[str, str] | None = None

    def flush() -> None:
        if cluster is not None and node is not None and "id" in node:
            cluster.clients.append(
                QnetdClient(int(node["id"]), node.get("Client address", ""), node.get("Vote", ""))
            )

    for line in text.splitlines():
        if m := _CLUSTER_RE.match(line):
            flush()
            node = None
            cluster = QnetdCluster(m.group(1))
            clusters[cluster.name] = cluster
        elif cluster is not None and (m := _NODE_RE.match(line)):
            flush()
            node = {"id": m.group(1)}
        elif cluster is not None and (m := _FIELD_RE.match(line)):
            key, value = m.group(1).strip(), m.group(2)
            if node is not None:
                node[key] = value
            elif key == "Algorithm":
                cluster.algorithm = value
            elif key == "Tie-breaker":
                cluster.tie_breaker = value
    flush()
    return clusters


def votes_by_node(p: LabPlan, cluster: QnetdCluster | None) -> dict[str, str]:
    """Each cluster node's vote from qnetd, as cast (ACK, NACK; "" if it is not
    connected); pure. Node
    IDs are corosync.conf's: the cluster nodes in order from 1."""
    by_id = {c.node_id: effective_vote(c.vote) for c in cluster.clients} if cluster else {}
    return {n.name: by_id.get(i, "") for i, n in enumerate(p.cluster_nodes, start=1)}


def effective_vote(vote: str) -> str:
    """The vote a node's qdevice casts, from qnetd's "NOW (LAST SENT)": "No change"
    keeps the one sent before ("No change (ACK)" is an ACK); pure."""
    now, _, last = vote.partition(" (")
    return last.rstrip(")") if now == "No change" else now


def setup(p: LabPlan, connect: ConnectFn) -> None:
    """Certificates made, corosync-qnetd restarted on them, corosync-qdevice started
    on every cluster node (and at every boot); returns once each has qnetd's ACK."""
    q = p.qnetd
    assert q is not None
    with connect(p, q) as c:
        # The image's layer holds a CA made when the package was installed, the same
        # in every lab: each lab makes its own, as Debian's postinst makes it (the
        # daemon runs as coroqnetd; certutil gives new files the directory's group).
        c.run(
            f"systemctl stop corosync-qnetd.service && rm -rf {QNETD_DB} && "
            f"corosync-qnetd-certutil -i -G >/dev/null && chgrp coroqnetd {QNETD_DB} "
            f"{QNETD_DB}/cert9.db {QNETD_DB}/key4.db"
        )
    with connect(p, p.cluster_nodes[0]) as c:
        r = c.run(quick_start_command(p), check=False, timeout=SETUP_TIMEOUT)
        if r.status != 0:
            said = (r.stderr or r.stdout).strip().splitlines()
            raise LabctlError(
                f"{p.cluster_nodes[0].name}: corosync-qdevice-net-certutil -Q failed "
                f"(exit {r.status}): {said[-1] if said else 'no output'}"
            )
    with connect(p, q) as c:
        c.run(
            "systemctl enable -q --now corosync-qnetd.service && systemctl restart corosync-qnetd"
        )
    for n in p.cluster_nodes:
        with connect(p, n) as c:
            c.run("systemctl enable -q --now corosync-qdevice.service")
    wait_votes(p, connect, VOTE_TIMEOUT)


def qnetd_view(p: LabPlan, c: ssh.Connection) -> QnetdCluster | None:
    """The lab's cluster as its qnetd node sees it (None: not connected there)."""
    out = c.run("corosync-qnetd-tool -l", check=False).stdout
    return parse_qnetd_list(out).get(p.name)


def wait_votes(p: LabPlan, connect: ConnectFn, timeout: float) -> dict[str, str]:
    """Until qnetd has every cluster node connected and voting ACK."""
    assert p.qnetd is not None
    deadline = time.monotonic() + timeout
    votes: dict[str, str] = {}
    with connect(p, p.qnetd) as c:
        while True:
            votes = votes_by_node(p, qnetd_view(p, c))
            if all(v == "ACK" for v in votes.values()):
                return votes
            if time.monotonic() > deadline:
                missing = ", ".join(f"{k} ({v or 'not connected'})" for k, v in votes.items())
                raise LabctlError(
                    f"the quorum device has no ACK from every cluster node after "
                    f"{timeout:.0f} s: {missing} (`labctl collect {p.name}` has the journals)"
                )
            time.sleep(1.0)


@dataclass(frozen=True)
class QdeviceStatus:
    node: str  # the qnetd node
    algorithm: str  # as configured (ffsplit, lms)
    votes: dict[str, str]  # cluster node -> the vote qnetd gave it ("" not connected)
    error: str = ""  # why there is no view


def status(p: LabPlan, connect: ConnectFn) -> QdeviceStatus | None:
    """The qdevice's view for `status` (None: the lab has no quorum device)."""
    q: NodePlan | None = p.qnetd
    if q is None:
        return None
    alg = algorithm(len(p.cluster_nodes))
    try:
        with connect(p, q) as c:
            cluster = qnetd_view(p, c)
    except LabctlError as e:
        return QdeviceStatus(q.name, alg, {}, error=str(e))
    return QdeviceStatus(q.name, alg, votes_by_node(p, cluster))
