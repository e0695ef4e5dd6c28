"""Pacemaker on a lab: corosync.conf, CIB fragments, crm_mon parsing (pure), and the
steps that put them on nodes through Pacemaker's own CLI over SSH."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field

from lxml import etree
from lxml.builder import E

from labctl import qdevice
from labctl.plan import LabPlan, NodePlan
from labctl.render import render

AUTHKEY_PATH = "/etc/pacemaker/authkey"
COROSYNC_CONF = "/etc/corosync/corosync.conf"
COROSYNC_AUTHKEY = "/etc/corosync/authkey"
COROSYNC_AUTHKEY_BYTES = 256  # corosync-keygen's size
# The CIB schema the generated fragments are checked against (Pacemaker 2.1).
CIB_SCHEMA = "pacemaker-3.9"

CIB_PATH = "/var/lib/pacemaker/cib/cib.xml"
# Properties Pacemaker maintains itself; `status` shows only the ones set by someone.
AUTOMATIC_PROPERTIES = frozenset(
    {"dc-version", "cluster-infrastructure", "cluster-name", "have-watchdog", "last-lrm-refresh"}
)


def lab_properties(fencing: bool, guests: bool = False) -> dict[str, str]:
    """Cluster properties labctl sets explicitly on every lab (and `status` shows).

    dc-deadtime: how long a starting controller waits to hear of an existing DC
    before it calls an election; the default 20 s is sized for real networks,
    where a lab's nodes share one host bridge. Cuts cluster formation from ~25 s
    to ~5 s. CTS's --clobber-cib erases it, so CTS runs with Pacemaker's default.
    stonith-enabled is said explicitly either way.
    start-failure-is-fatal=false (guest labs): on this kind of host, libvirt's LXC
    driver fails a container start when another container's systemd removes its
    new cgroup ("Failure in libvirt_lxc startup: Unable to write to .../tasks";
    labctl's own containers no longer do, docs/host.md); with the default, two
    such failures ban a guest from both cluster nodes for good, where a retry
    on the same node works.
    load-threshold=10000%: every node of a lab reads the one host's load
    (/proc/loadavg is not per container), so the controller's throttle would
    measure the host, not the node: at 60 guests on 2 cores it held each cluster
    node to one action at a time ("High CPU load detected") and the lab never came
    online. The throttle on the CIB manager's own CPU use is left as it is.
    concurrent-fencing=true (guest labs): a guest node is fenced by stopping its
    container, and with Debian 2.1.5's default (false) those stops run one after
    another: 50 guests of a fenced cluster node took 3.5 minutes to come back.
    Pacemaker 3.0 defaults to true.
    """
    props = {
        "dc-deadtime": "2s",
        "stonith-enabled": "true" if fencing else "false",
        "load-threshold": "10000%",
    }
    if guests:
        props["start-failure-is-fatal"] = "false"
        props["concurrent-fencing"] = "true"
    return props


def seed_cib_command(props: dict[str, str]) -> str:
    """Shell that gives a cluster node its first CIB, made by Pacemaker's own tools
    (cibadmin --empty, crm_attribute on a CIB_file), unless the node has one."""
    sets = " && ".join(
        f"CIB_file=$f crm_attribute --type crm_config --name {shlex.quote(k)} "
        f"--update {shlex.quote(v)}"
        for k, v in props.items()
    )
    return (
        f"test -e {CIB_PATH} || {{ f=$(mktemp) && cibadmin --empty > $f && {sets} && "
        f"install -o hacluster -g haclient -m 0600 $f {CIB_PATH} && rm -f $f; }}"
    )


# ---------------------------------------------------------------- pure: config


# corosync runs at realtime priority. In a one-vCPU VM under TCG it then took
# the whole CPU (the guest kernel logged "RT throttling activated") while
# Pacemaker's daemons starved: "unresponsive to ipc", and once a cluster never
# formed. Corosync 3 has no command-line switch for this, only system.sched_rr.
COROSYNC_NOT_REALTIME = """system {
    sched_rr: no
}

"""


def corosync_conf(plan: LabPlan, realtime: bool = True) -> str:
    """corosync.conf for the lab's cluster nodes (knet, node names = host names).
    REALTIME False: corosync at normal priority (VMs under TCG)."""
    cluster = plan.cluster_nodes
    nodes = "\n".join(
        "    node {\n"
        + "".join(f"        ring{k}_addr: {ip}\n" for k, ip in enumerate((n.ip, *n.link_ips)))
        + f"        name: {n.name}\n        nodeid: {i}\n    }}"
        for i, n in enumerate(cluster, start=1)
    )
    # two_node keeps a 2-node cluster quorate when one node is gone (and implies
    # wait_for_all), as corosync's own documentation recommends for two nodes;
    # votequorum refuses it with a quorum device, whose vote breaks the tie instead.
    if plan.qnetd is not None:
        quorum = qdevice.device_conf(plan)
    else:
        quorum = "    two_node: 1" if len(cluster) == 2 else ""
    system = "" if realtime else COROSYNC_NOT_REALTIME
    return render("corosync.conf", lab=plan.name, nodes=nodes, quorum_options=quorum, system=system)


# The connection's start keeps retrying until its timeout. After fencing, a VM
# (under TCG) needs tens of seconds to boot: with the default 20 s the start
# fails, and a failed start bans the connection for good.
VM_REMOTE_START_TIMEOUT = "180s"


def _vm_start_op(node: NodePlan, rid: str) -> list[etree._Element]:
    if node.backend != "vm":
        return []
    return [E.op(id=f"{rid}-start-0", name="start", interval="0", timeout=VM_REMOTE_START_TIMEOUT)]


def remote_primitive(node: NodePlan, port: int) -> etree._Element:
    """An ocf:pacemaker:remote connection resource for remote node NODE."""
    rid = node.name
    return E.primitive(
        E.instance_attributes(
            E.nvpair(id=f"{rid}-server", name="server", value=str(node.ip)),
            E.nvpair(id=f"{rid}-port", name="port", value=str(port)),
            id=f"{rid}-instance_attributes",
        ),
        E.operations(
            E.op(id=f"{rid}-monitor-10s", name="monitor", interval="10s", timeout="15s"),
            *_vm_start_op(node, rid),
        ),
        id=rid,
        type="remote",
        provider="pacemaker",
        **{"class": "ocf"},
    )


def guest_primitive(
    node: NodePlan, config: str, hypervisor: str, port: int, force_stop: bool
) -> etree._Element:
    """An ocf:heartbeat:VirtualDomain resource that makes its domain guest node NODE."""
    rid = f"vm-{node.name}"
    params = {"config": config, "hypervisor": hypervisor}
    # The agent writes the domain's vCPUs and memory into the resource's
    # utilization on every start and monitor: a CIB change each, which aborts the
    # transition in flight; with dozens of guests starting, transitions never
    # finish. Labs use no utilization-based placement.
    for what in ("cpu", "hv_memory", "host_memory"):
        params[f"autoset_utilization_{what}"] = "false"
    if force_stop:
        params["force_stop"] = "true"  # a container has no ACPI shutdown to wait for
    meta = {
        # Once recovered elsewhere, a guest stays there (as pcs makes every
        # resource do): without it, a fenced cluster node that rejoins takes
        # half of the guests back, each stopped and booted again.
        "resource-stickiness": "1",
        "remote-node": node.name,
        "remote-addr": str(node.ip),  # no name resolution needed on the cluster nodes
        "remote-port": str(port),
    }
    return E.primitive(
        E.instance_attributes(
            *[E.nvpair(id=f"{rid}-{k}", name=k, value=v) for k, v in params.items()],
            id=f"{rid}-instance_attributes",
        ),
        E.meta_attributes(
            *[E.nvpair(id=f"{rid}-meta-{k}", name=k, value=v) for k, v in meta.items()],
            id=f"{rid}-meta_attributes",
        ),
        E.operations(
            E.op(id=f"{rid}-start", name="start", interval="0s", timeout="90s"),
            E.op(id=f"{rid}-stop", name="stop", interval="0s", timeout="90s"),
            E.op(id=f"{rid}-monitor-10s", name="monitor", interval="10s", timeout="30s"),
        ),
        id=rid,
        type="VirtualDomain",
        provider="heartbeat",
        **{"class": "ocf"},
    )


DUMMY_AGENT = "ocf:pacemaker:Dummy"


def dummy_id(i: int) -> str:
    return f"dummy-{i}"


def dummy_primitive(i: int) -> etree._Element:
    """Test resource I (1-based): an ocf:pacemaker:Dummy with a recurring monitor, so
    that the cluster notices when it is gone and a failover shows in crm_mon."""
    rid = dummy_id(i)
    return E.primitive(
        E.operations(
            E.op(id=f"{rid}-monitor-10s", name="monitor", interval="10s", timeout="20s"),
        ),
        id=rid,
        type="Dummy",
        provider="pacemaker",
        **{"class": "ocf"},
    )


def dummy_primitives(count: int) -> list[etree._Element]:
    return [dummy_primitive(i) for i in range(1, count + 1)]


def no_discovery(rid: str, nodes: list[str]) -> list[etree._Element]:
    """Location constraints that keep NODES from probing resource RID.

    A guest's VirtualDomain asks the host's one libvirtd, which every cluster node
    shares: a cluster node that probes it finds running every guest that another
    node started. After a cluster node was fenced and rejoined, each of its probes
    then reported a guest "active on 2 nodes", the scheduler stopped and started
    every guest of the lab, and each probe result aborted the transition in flight
    (100 guests: five minutes). Without probes the cluster trusts its own history
    of where it started a guest, as it would with a libvirtd per host; a guest
    stopped behind its back is still caught by the recurring monitor.
    """
    return [
        E.rsc_location(
            id=f"{rid}-no-probe-{node}",
            rsc=rid,
            node=node,
            score="0",
            **{"resource-discovery": "never"},
        )
        for node in nodes
    ]


def property_set(props: dict[str, str], set_id: str = "cib-bootstrap-options") -> etree._Element:
    return E.cluster_property_set(
        *[E.nvpair(id=f"{set_id}-{k}", name=k, value=v) for k, v in props.items()],
        id=set_id,
    )


def cib_document(
    resources: list[etree._Element],
    properties: dict[str, str],
    nodes: list[str] = (),  # type: ignore[assignment]
    constraints: list[etree._Element] = (),  # type: ignore[assignment]
) -> str:
    """A whole CIB holding RESOURCES, PROPERTIES and CONSTRAINTS, as crm_verify wants it."""
    cib = E.cib(
        E.configuration(
            E.crm_config(property_set(properties)),
            E.nodes(*[E.node(id=str(i), uname=n) for i, n in enumerate(nodes, start=1)]),
            E.resources(*resources),
            E.constraints(*constraints),
        ),
        E.status(),
        **{"validate-with": CIB_SCHEMA, "epoch": "1", "num_updates": "0", "admin_epoch": "0"},
    )
    return etree.tostring(cib, pretty_print=True, encoding="unicode")


def to_text(el: etree._Element) -> str:
    return etree.tostring(el, encoding="unicode")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- pure: crm_mon


@dataclass(frozen=True)
class PcmkNode:
    name: str
    type: str  # member, remote (guest nodes are remote nodes with a container)
    online: bool
    standby: bool = False
    maintenance: bool = False
    unclean: bool = False
    shutdown: bool = False
    is_dc: bool = False
    container: str = ""  # guest nodes: the resource that runs them (id_as_resource)
    feature_set: str = ""  # the CRM feature set crm_mon shows for it ("" where it shows none)

    @property
    def state(self) -> str:
        """One word as crm_mon's text output would say it."""
        prefix = {"member": "", "remote": "Remote"}.get(self.type, "")
        if self.container:
            prefix = "Guest"
        if self.unclean:
            return "UNCLEAN"
        if not self.online:
            return f"{prefix}OFFLINE"
        if self.standby:
            return "standby"
        if self.maintenance:
            return "maintenance"
        return f"{prefix}Online"


@dataclass(frozen=True)
class PcmkResource:
    id: str
    agent: str
    role: str
    active: bool
    failed: bool
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class ClusterView:
    dc: str | None
    quorate: bool
    nodes: dict[str, PcmkNode] = field(default_factory=dict)
    resources: dict[str, PcmkResource] = field(default_factory=dict)
    stonith_enabled: bool = True
    dc_version: str = ""  # the DC's Pacemaker, as crm_mon shows it
    mixed_version: bool = False  # crm_mon's own word: the cluster nodes' versions differ


def _flag(el: etree._Element, name: str) -> bool:
    return el.get(name) == "true"


def parse_properties(xml_text: str) -> dict[str, str]:
    """Cluster properties from `cibadmin --query --scope crm_config`."""
    doc = etree.fromstring(xml_text.encode())
    return {
        nv.get("name", ""): nv.get("value", "")
        for ps in doc.iter("cluster_property_set")
        for nv in ps.iterfind("nvpair")
    }


def parse_crm_mon(xml_text: str) -> ClusterView:
    """Node and resource states from `crm_mon --output-as=xml` (Pacemaker 2.1+)."""
    doc = etree.fromstring(xml_text.encode())
    summary = doc.find("summary")
    dc_el = summary.find("current_dc") if summary is not None else None
    dc = None
    quorate = False
    dc_version = ""
    if dc_el is not None and _flag(dc_el, "present"):
        dc = dc_el.get("name")
        quorate = _flag(dc_el, "with_quorum")
        dc_version = dc_el.get("version", "")
    stonith = True
    opts = summary.find("cluster_options") if summary is not None else None
    if opts is not None:
        stonith = _flag(opts, "stonith-enabled")
    nodes: dict[str, PcmkNode] = {}
    for n in doc.iterfind("nodes/node"):
        nodes[n.get("name", "")] = PcmkNode(
            name=n.get("name", ""),
            type=n.get("type", "member"),
            online=_flag(n, "online"),
            standby=_flag(n, "standby"),
            maintenance=_flag(n, "maintenance"),
            unclean=_flag(n, "unclean"),
            shutdown=_flag(n, "shutdown"),
            is_dc=_flag(n, "is_dc"),
            container=n.get("id_as_resource", ""),
            feature_set=n.get("feature_set", ""),
        )
    resources: dict[str, PcmkResource] = {}
    for r in doc.iter("resource"):
        resources[r.get("id", "")] = PcmkResource(
            id=r.get("id", ""),
            agent=r.get("resource_agent", ""),
            role=r.get("role", ""),
            active=_flag(r, "active"),
            failed=_flag(r, "failed"),
            nodes=tuple(x.get("name", "") for x in r.iterfind("node")),
        )
    mixed = dc_el is not None and _flag(dc_el, "mixed_version")
    return ClusterView(dc, quorate, nodes, resources, stonith, dc_version, mixed)


def not_ready(view: ClusterView, expected: dict[str, str]) -> dict[str, str]:
    """Nodes of EXPECTED (name -> role) that are not online yet, with what crm_mon says."""
    missing = {}
    if view.dc is None:
        return {n: "no DC elected yet" for n in expected}
    for name, role in expected.items():
        node = view.nodes.get(name)
        if node is None:
            missing[name] = "not in the cluster yet"
        elif not node.online or node.unclean:
            missing[name] = node.state
        elif role == "cluster" and node.type != "member":
            missing[name] = f"is a {node.type} node, expected a cluster node"
        elif role in ("remote", "guest") and node.type != "remote":
            missing[name] = f"is a {node.type} node, expected a {role} node"
        elif role == "guest" and not node.container:
            missing[name] = "online, but not as a guest node"
    return missing


# ---------------------------------------------------------------- node commands (strings)


def ensure_package_command(package: str, binary: str) -> str:
    """Shell that installs PACKAGE with the node's package manager unless BINARY is there."""
    q = shlex.quote
    return (
        f"command -v {q(binary)} >/dev/null 2>&1 || test -x /usr/lib/pacemaker/{q(binary)} "
        f"|| test -x /usr/libexec/pacemaker/{q(binary)} || {{ "
        f"if command -v apt-get >/dev/null; then DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y -q {q(package)}; "
        f"elif command -v dnf >/dev/null; then dnf install -y {q(package)}; "
        f"elif command -v zypper >/dev/null; then zypper --non-interactive install {q(package)}; "
        f"else echo 'no apt-get, dnf or zypper on this node' >&2; exit 127; fi; }}"
    )


@dataclass(frozen=True)
class NodePacemaker:
    """What a node says of the Pacemaker it has: version, build, and labctl's build name."""

    version: str = ""
    build: str = ""  # Pacemaker's own build string (a commit hash)
    source: str = ""  # labctl's build name, or "distribution"


# One round trip: the CLI tools' version (they and the daemons come from the
# same layers), then labctl's marker of a source build, if the node has one.
NODE_VERSION_COMMAND = (
    "crm_mon --version --output-as=xml; echo '@@labctl@@'; "
    "cat /usr/share/labctl/pacemaker-build.json 2>/dev/null || true"
)


def parse_node_version(text: str) -> NodePacemaker:
    """Parse NODE_VERSION_COMMAND's output; pure."""
    xml_part, _, marker = text.partition("@@labctl@@")
    version = build = ""
    try:
        el = etree.fromstring(xml_part.strip().encode()).find("version")
    except etree.XMLSyntaxError:
        el = None
    if el is not None:
        version, build = el.get("version", ""), el.get("build", "")
    source = "distribution"
    if marker.strip():
        try:
            source = str(json.loads(marker)["build"])
        except (ValueError, KeyError, TypeError):
            source = "unknown"
    return NodePacemaker(version, build, source)
