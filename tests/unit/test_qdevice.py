"""`up --qdevice`: the qnetd node's plan, corosync's quorum.device, qnetd's view."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

import pytest

from labctl import capacity, collect, netfault, pacemaker, plan, provision, qdevice, virt
from labctl.errors import UsageError
from labctl.spec import make_spec

DATA = Path(__file__).parent.parent / "data"


def _plan(nodes: int = 2, mode: str = "cluster", **kw) -> plan.LabPlan:
    return plan.make_plan(make_spec("qd", nodes, mode=mode, qdevice=True, **kw), 1, Path("/s"))


def test_the_qnetd_node_is_planned_below_the_cluster_nodes_and_is_no_pacemaker_node():
    p = _plan()
    q = p.qnetd
    assert q is not None
    assert (q.name, q.role, q.ip, q.layer) == (
        "qd-q1",
        "qnetd",
        ipaddress.IPv4Address("10.213.1.9"),
        "cluster",  # corosync's tools, and no Pacemaker daemon started at boot
    )
    assert q not in p.nodes and p.all_nodes == (*p.nodes, q)
    assert q.mac not in {n.mac for n in p.nodes}
    assert p.node("qd-q1") is q  # ssh and exec find it by name
    assert q.packages == ("corosync-qnetd",)
    assert {n.packages for n in p.cluster_nodes} == {("corosync-qdevice",)}


def test_without_qdevice_there_is_no_qnetd_node_and_no_extra_package():
    p = plan.make_plan(make_spec("qd", 2), 1, Path("/s"))
    assert p.qnetd is None and p.all_nodes == p.nodes
    assert all(n.packages == () for n in p.nodes)


def test_lab_packages_and_the_qdevices_share_one_sorted_layer_list():
    p = _plan(packages=["pcs"])
    assert {n.packages for n in p.cluster_nodes} == {("corosync-qdevice", "pcs")}
    assert p.qnetd is not None and p.qnetd.packages == ("corosync-qnetd", "pcs")


def test_remote_labs_give_the_qdevice_to_cluster_nodes_only():
    p = _plan(nodes=2, mode="remote")
    remotes = [n for n in p.nodes if n.role == "remote"]
    assert all(n.packages == () for n in remotes)
    assert all(n.packages == ("corosync-qdevice",) for n in p.cluster_nodes)


def test_corosync_conf_has_the_device_and_no_two_node():
    conf = pacemaker.corosync_conf(_plan())
    assert "two_node" not in conf  # votequorum refuses it with a device
    assert "model: net" in conf and "host: 10.213.1.9" in conf
    assert "algorithm: ffsplit" in conf and "votes: 1" in conf and "tls: on" in conf
    plain = pacemaker.corosync_conf(plan.make_plan(make_spec("qd", 2), 1, Path("/s")))
    assert "two_node: 1" in plain and "device" not in plain


def test_an_odd_cluster_gets_lms_with_votequorums_own_vote_count():
    conf = pacemaker.corosync_conf(_plan(nodes=3))
    assert "algorithm: lms" in conf and "votes:" not in conf


def test_the_certificates_are_made_by_corosyncs_quick_start_for_every_cluster_node():
    argv = shlex.split(qdevice.quick_start_command(_plan(nodes=3)))
    assert argv == [
        "corosync-qdevice-net-certutil",
        "-Q",
        "-n",
        "qd",  # corosync.conf's cluster_name
        "qd-q1",
        "qd-c1",
        "qd-c2",
        "qd-c3",
    ]


def test_qnetd_tools_list_is_parsed_into_votes_per_cluster_node():
    # As corosync-qnetd-tool -l printed it for a 2-node lab named qd.
    clusters = qdevice.parse_qnetd_list((DATA / "qnetd-tool-l.txt").read_text())
    qd = clusters["qd"]
    assert qd.algorithm.startswith("Fifty-Fifty split")
    assert qd.tie_breaker == "Node with lowest node ID"
    assert [(c.node_id, c.vote) for c in qd.clients] == [(1, "ACK (ACK)"), (2, "No change (ACK)")]
    p = _plan()
    assert qdevice.votes_by_node(p, qd) == {"qd-c1": "ACK", "qd-c2": "ACK"}
    assert qdevice.votes_by_node(p, None) == {"qd-c1": "", "qd-c2": ""}


@pytest.mark.parametrize(
    "raw, cast",
    [
        ("ACK (ACK)", "ACK"),
        ("No change (ACK)", "ACK"),
        ("No change (NACK)", "NACK"),
        ("NACK (ACK)", "NACK"),
        ("Wait for reply", "Wait for reply"),
    ],
)
def test_no_change_keeps_the_vote_sent_before(raw, cast):
    assert qdevice.effective_vote(raw) == cast


def test_a_node_missing_from_qnetd_has_no_vote():
    text = 'Cluster "qd":\n    Algorithm:\t\tFifty-Fifty split\n    Node ID 2:\n        Vote:\t\t\tNACK (NACK)\n'
    qd = qdevice.parse_qnetd_list(text)["qd"]
    assert qdevice.votes_by_node(_plan(), qd) == {"qd-c1": "", "qd-c2": "NACK"}


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"bare": True}, "--bare makes no cluster"),
        ({"nodes": 1}, "needs at least 2"),
        ({"backend": "vm"}, "needs container cluster nodes"),
        ({"mode": "remote", "nodes": 1, "cluster_nodes": 1}, "needs at least 2"),
    ],
)
def test_qdevices_that_cannot_be_made_are_one_line_errors(kwargs, says):
    args = {"nodes": 2, **kwargs}
    with pytest.raises(UsageError, match=says):
        make_spec("qd", args.pop("nodes"), qdevice=True, **args)


def test_vm_remote_nodes_with_container_cluster_nodes_may_have_a_qdevice():
    p = _plan(nodes=1, mode="remote", backend="vm")
    assert p.qnetd is not None and p.qnetd.backend == "lxc"


def test_every_node_resolves_and_pins_the_qnetd_node():
    p = _plan()
    hosts = provision.hosts_file(p, "host")
    assert "10.213.1.9\tqd-q1" in hosts
    known = provision.known_hosts_lines(p, {n.name: "ssh-ed25519 AAAA" for n in p.all_nodes})
    assert "qd-q1,10.213.1.9 ssh-ed25519 AAAA" in known


def test_the_qnetd_node_counts_in_memory_and_is_collected_with_qnetds_view():
    p = _plan()
    assert "qd-q1" in capacity.node_mib(p)
    names = dict(collect.node_commands(p.qnetd, "-1h"))  # type: ignore[arg-type]
    assert "corosync-qnetd-tool.txt" in names and "crm_mon.txt" not in names
    c1 = dict(collect.node_commands(p.cluster_nodes[0], "-1h"))
    assert "corosync-qdevice-tool.txt" in c1


def test_down_removes_the_qnetd_nodes_domain_log(tmp_path):
    (tmp_path / "qd-q1.log").write_text("x")
    assert virt.domain_log_paths("qd", ["qd-q1"], (tmp_path,)) == [tmp_path / "qd-q1.log"]


def test_a_partition_may_leave_the_qnetd_node_out_of_every_group():
    nodes = ["qd-c1", "qd-c2", "qd-q1"]
    links = {n: [0] for n in nodes}
    s = netfault.apply(netfault.NetState(), "partition", ["c1", "c2"], "qd", links, None, ["qd-q1"])
    assert s.groups == (("qd-c1",), ("qd-c2",))
    s = netfault.apply(s, "partition", ["c1", "c2,q1"], "qd", links, None, ["qd-q1"])
    assert s.groups == (("qd-c1",), ("qd-c2", "qd-q1"))
    with pytest.raises(UsageError, match="qd-c2 in no group"):
        netfault.apply(s, "partition", ["c1", "q1"], "qd", links, None, ["qd-q1"])
